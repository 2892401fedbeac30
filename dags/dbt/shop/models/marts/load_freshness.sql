{#
  Per dataset, the last load and the files waiting, live: a view over the ledgers, so a dashboard that may read
  only the marts still sees a load that happened after the last dbt build (and can say its marts are behind).
#}
{{ config(materialized='view') }}

select
    dataset,
    max(loaded_at) filter (where status = 'loaded') as last_loaded_at,
    max(updated_at) as last_seen_at,
    count(*) filter (where status in ('pending', 'failed')) as files_waiting,
    count(*) filter (where status = 'parked') as files_parked
from {{ ref('stg_file_ledger') }}
group by dataset
