-- Policies in force by product and calendar month, with their premium.
-- inputs: pc_policyperiod
-- A policy period counts in every month it overlaps: from the month of periodstart to the month before
-- periodend (a period ending on the 1st at midnight is not in force that month). Cancelled periods carry no
-- cancellation date here, so they are left out entirely.
WITH period_months AS (
    SELECT
        productcode,
        id,
        totalpremium,
        explode(sequence(
            CAST(date_trunc('month', periodstart) AS DATE),
            CAST(date_trunc('month', periodend - INTERVAL 1 MILLISECOND) AS DATE),
            INTERVAL 1 MONTH
        )) AS month_start
    FROM pc_policyperiod
    WHERE status <> 'cancelled' AND periodend > periodstart
)
SELECT
    productcode AS product_code,
    CAST(month_start AS DATE) AS month,
    COUNT(DISTINCT id) AS policies_in_force,
    SUM(totalpremium) AS total_premium_in_force
FROM period_months
GROUP BY productcode, CAST(month_start AS DATE)
ORDER BY product_code, month
