-- The read-only role of dashboards and BI tools (Power BI, Metabase, Superset, the Streamlit dashboard), for a
-- warehouse where dbt's user may not create roles (Amazon RDS: run it once as the master user). Locally, and
-- wherever dbt's user has CREATEROLE, the dbt build creates the same role itself (dags/dbt/shop/macros/bi_role.sql).
--
--   psql "host=<rds endpoint> port=5432 dbname=warehouse user=<master user> sslmode=verify-full \
--         sslrootcert=global-bundle.pem" -f docs/bi-readonly.sql
--   psql ... -c '\password bi_reader'          -- its password: keep it in your secrets manager, never in git
--
-- What it may do: read the tables and views of the schema `marts`. Nothing else: not the loaded tables
-- (analytics), the ledgers (etl) or staging, and no writes anywhere (tests/analytics/test_bi_role.py).

CREATE ROLE bi_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
ALTER ROLE bi_reader SET default_transaction_read_only = on;
ALTER ROLE bi_reader SET statement_timeout = '60s';
-- A session left inside a transaction would hold locks that keep dbt from replacing a mart.
ALTER ROLE bi_reader SET idle_in_transaction_session_timeout = '60s';

-- PostgreSQL before 15 lets every role create tables in the schema public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Every dbt build grants these again (and SELECT on each mart it rebuilds); before the first build:
CREATE SCHEMA IF NOT EXISTS marts AUTHORIZATION etl;
GRANT USAGE ON SCHEMA marts TO bi_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA marts TO bi_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE etl IN SCHEMA marts GRANT SELECT ON TABLES TO bi_reader;
