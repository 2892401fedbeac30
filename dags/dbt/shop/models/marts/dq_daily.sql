-- Per dataset and partition day: files by outcome and rows read, loaded, rejected and dropped as duplicates.
-- Rows count for the versions the pipeline finished with (loaded, or rejected whole); a superseded version
-- (a newer one of the same key came first) is not counted.
select
    dataset,
    partition_day,
    count(*) filter (where status <> 'superseded') as files,
    count(*) filter (where status = 'loaded') as files_loaded,
    count(*) filter (where status = 'rejected') as files_rejected,
    count(*) filter (where status = 'failed') as files_failed,
    count(*) filter (where status = 'parked') as files_parked,
    count(*) filter (where status = 'pending') as files_pending,
    coalesce(sum(rows_read) filter (where status in ('loaded', 'rejected')), 0) as rows_read,
    coalesce(sum(rows_loaded) filter (where status in ('loaded', 'rejected')), 0) as rows_loaded,
    coalesce(sum(rows_rejected) filter (where status in ('loaded', 'rejected')), 0) as rows_rejected,
    coalesce(sum(rows_duplicate) filter (where status in ('loaded', 'rejected')), 0) as rows_duplicate,
    max(loaded_at) as last_loaded_at,
    max(updated_at) as last_seen_at
from {{ ref('stg_file_ledger') }}
where partition_day is not null
group by dataset, partition_day
