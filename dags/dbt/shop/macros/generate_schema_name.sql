{#
  Models land in the schema they name (`staging`, `marts`), not dbt's default `<target schema>_<name>`: BI tools
  and the read-only role are pointed at `marts` in every environment (one warehouse database per environment).
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
