select
    customer_id,
    full_name,
    email,
    country,
    region,
    segment,
    signup_date,
    marketing_opt_in,
    credit_limit,
    loyalty_points,
    updated_at,
    loaded_at
from {{ source('warehouse', 'customers') }}
