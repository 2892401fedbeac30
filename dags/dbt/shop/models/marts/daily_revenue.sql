{#
  Revenue per order day, region and category, incremental by day: a build recomputes only the days that
  changed (replaced whole, delete+insert on order_date) and leaves the others as they are. A day changed when
  orders were loaded into it since the previous build, or when its totals no longer match fct_orders (an order
  that moved to another day or was retracted changes its old day too).
#}
{{
    config(
        materialized='incremental',
        unique_key='order_date',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        indexes=[{'columns': ['order_date']}],
        post_hook=[
            "delete from {{ this }} as d where not exists (select from {{ ref('fct_orders') }} as f where f.order_date = d.order_date)"
        ],
    )
}}

with
{% if is_incremental() %}
changed_days as (
    select distinct order_date
    from {{ ref('fct_orders') }}
    where loaded_at > (select coalesce(max(last_loaded_at), '-infinity'::timestamptz) from {{ this }})
    union
    select coalesce(f.order_date, d.order_date)
    from (
        select order_date, count(*) as orders, sum(order_total) as revenue from {{ ref('fct_orders') }} group by 1
    ) as f
    full join (
        select order_date, sum(orders) as orders, sum(revenue) as revenue from {{ this }} group by 1
    ) as d on d.order_date = f.order_date
    where f.orders is distinct from d.orders or f.revenue is distinct from d.revenue
),
{% endif %}
orders as (
    select *
    from {{ ref('fct_orders') }}
    {% if is_incremental() %}
    where order_date in (select order_date from changed_days)
    {% endif %}
)

select
    order_date,
    region,
    category,
    count(*) as orders,
    sum(quantity) as units,
    sum(order_total) as revenue,
    count(distinct customer_id) filter (where not is_guest) as customers,
    count(*) filter (where is_guest) as guest_orders,
    round(sum(order_total) / count(*), 2) as avg_order_value,
    max(loaded_at) as last_loaded_at,
    '{{ run_started_at.isoformat() }}'::timestamptz as built_at
from orders
group by order_date, region, category
