-- Every dataset's file ledger in one relation: one row per raw object version. The partition day is the one its
-- folder names (raw/<dataset>/dt=YYYY-MM-DD/<file>; null for objects outside that layout, which the ledger
-- records as `ignored` with the reason). Rows rejected inside a loaded file are CSVs in S3 (rejected/...): the
-- ledger has their count, and `reason` for a file rejected whole.
{% for dataset in var('ledger_datasets') %}
select
    md5(concat_ws('|', '{{ dataset }}', source_key, etag, last_modified::text)) as file_version_id,
    '{{ dataset }}'::text as dataset,
    source_key,
    regexp_replace(source_key, '^.*/', '') as file_name,
    partition_day,
    etag,
    last_modified,
    size_bytes,
    status,
    reason,
    quarantined,
    attempts,
    last_error,
    first_seen_at,
    updated_at,
    loaded_at,
    deleted_at,
    coalesce(rows_read, 0) as rows_read,
    coalesce(rows_loaded, 0) as rows_loaded,
    coalesce(rows_rejected, 0) as rows_rejected,
    coalesce(rows_duplicate, 0) as rows_duplicate,
    encoding,
    run_id
from {{ source('etl', dataset ~ '_file_ledger') }}
{% if not loop.last %}union all{% endif %}
{% endfor %}
