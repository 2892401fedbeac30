{#
  One row per order, incremental: a build merges only the orders loaded since the previous build (their
  `loaded_at` is later than the newest in this table; the watermark misses nothing, see stg_orders), replacing an
  order that changed by its key. Orders the pipeline retracted (a reprocess, `on_source_delete: remove`) are
  deleted after the merge by a key lookup. `dbt build --full-refresh -s fct_orders+` rebuilds it from scratch.
#}
{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['order_date']}, {'columns': ['loaded_at']}, {'columns': ['order_id'], 'unique': true}],
        post_hook=[
            "delete from {{ this }} as f where not exists (select from {{ ref('stg_orders') }} as s where s.order_id = f.order_id)"
        ],
    )
}}

select
    order_id,
    order_ts,
    order_date,
    customer_id,
    is_guest,
    product_name,
    category,
    region,
    quantity,
    unit_price,
    order_total,
    source_key,
    loaded_at,
    '{{ run_started_at.isoformat() }}'::timestamptz as built_at
from {{ ref('stg_orders') }}
{% if is_incremental() %}
where loaded_at > (select coalesce(max(loaded_at), '-infinity'::timestamptz) from {{ this }})
{% endif %}
