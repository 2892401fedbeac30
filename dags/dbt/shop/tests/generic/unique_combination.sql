{#- No row shares its values of `columns` with another (dbt_utils' unique_combination_of_columns, without the
    package: dbt's hub is not reachable from every build machine). -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
