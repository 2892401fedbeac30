{#
  The read-only role of dashboards and BI tools (env var DBT_BI_ROLE, default `bi_reader`): it may read the marts and
  nothing else (not the loaded tables, the ledgers or staging).

  - on-run-start, `ensure_bi_role()` creates it when it does not exist: a LOGIN role without a password (the
    local stack's trust authentication lets it in; on RDS an admin gives it a password, see
    docs/bi-readonly.sql), whose sessions default to read-only transactions. Creating a role needs CREATEROLE;
    where dbt's user lacks it, create the role once as an admin with docs/bi-readonly.sql and this only checks.
  - each mart's `grants` config (dbt_project.yml) grants SELECT on it after every build;
  - on-run-end, `grant_marts_schema()` grants USAGE on the schema and SELECT on tables created there later.
#}
{% macro ensure_bi_role() %}
  {% set role = env_var('DBT_BI_ROLE', 'bi_reader') %}
  do $$
  begin
    if not exists (select from pg_catalog.pg_roles where rolname = '{{ role }}') then
      if not exists (select from pg_catalog.pg_roles where rolname = current_user and (rolcreaterole or rolsuper)) then
        raise exception 'role {{ role }} does not exist and % may not create roles: run docs/bi-readonly.sql as an admin', current_user;
      end if;
      create role {{ adapter.quote(role) }} login nosuperuser nocreatedb nocreaterole noreplication;
      alter role {{ adapter.quote(role) }} set default_transaction_read_only = on;
      alter role {{ adapter.quote(role) }} set statement_timeout = '60s';
      -- A BI session left inside a transaction would hold locks that keep dbt from replacing a mart.
      alter role {{ adapter.quote(role) }} set idle_in_transaction_session_timeout = '60s';
    end if;
  end
  $$;
{% endmacro %}

{% macro grant_marts_schema() %}
  {% set role = adapter.quote(env_var('DBT_BI_ROLE', 'bi_reader')) %}
  {% set marts = adapter.quote(generate_schema_name('marts', none)) %}
  {% if execute %}
    create schema if not exists {{ marts }};
    grant usage on schema {{ marts }} to {{ role }};
    grant select on all tables in schema {{ marts }} to {{ role }};
    alter default privileges in schema {{ marts }} grant select on tables to {{ role }};
  {% endif %}
{% endmacro %}
