-- Why rows were rejected, per dataset, as far as the ledger knows: a file rejected (or quarantined) whole has
-- its reason; rows rejected inside a loaded file have theirs in the rejected CSV in S3 (rejected/<file>.csv,
-- one reason per row), so the ledger groups them as one entry pointing there.
with rejected as (
    select
        dataset,
        case
            when status = 'rejected' then coalesce(reason, 'file rejected (no reason recorded)')
            else 'rows rejected inside loaded files (reasons per row: rejected/<file>.csv in S3)'
        end as reason,
        status = 'rejected' as whole_file,
        rows_rejected,
        partition_day,
        updated_at
    from {{ ref('stg_file_ledger') }}
    where status = 'rejected' or (status = 'loaded' and rows_rejected > 0)
)

select
    dataset,
    reason,
    whole_file,
    count(*) as files,
    sum(rows_rejected) as rows_rejected,
    min(partition_day) as first_partition_day,
    max(partition_day) as last_partition_day,
    max(updated_at) as last_seen_at,
    rank() over (partition by dataset order by sum(rows_rejected) desc, count(*) desc) as reason_rank
from rejected
group by dataset, reason, whole_file
