-- One row per customer: the CRM's attributes and what they bought. Customers who never ordered are here (no
-- orders), and so are customer ids that ordered but are not (yet) in the CRM export (`in_crm` false). Guests
-- (customer_id 'guest') are not customers.
with orders as (
    select
        customer_id,
        min(order_date) as first_order_date,
        max(order_date) as last_order_date,
        count(*) as orders,
        sum(quantity) as units,
        sum(order_total) as revenue
    from {{ ref('fct_orders') }}
    where not is_guest
    group by customer_id
)

select
    coalesce(c.customer_id, o.customer_id) as customer_id,
    coalesce(c.full_name, 'unknown customer') as full_name,
    c.segment,
    c.country,
    c.region as home_region,
    c.signup_date,
    c.marketing_opt_in,
    c.customer_id is not null as in_crm,
    o.first_order_date,
    o.last_order_date,
    coalesce(o.orders, 0) as orders,
    coalesce(o.units, 0) as units,
    coalesce(o.revenue, 0) as revenue,
    round(o.revenue / nullif(o.orders, 0), 2) as avg_order_value
from {{ ref('stg_customers') }} as c
full join orders as o on o.customer_id = c.customer_id
