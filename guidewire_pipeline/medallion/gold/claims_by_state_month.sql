-- Claims by loss state and loss month: open and closed claims, exposures, incurred and paid amounts.
-- inputs: cc_claim, cc_exposure, cc_transaction
-- Amounts: paid = payments; recovered = recoveries; reserved = reserve transactions;
-- incurred = reserved + paid - recovered. Exposures and transactions are summed per claim first so the
-- joins never multiply a claim's rows.
WITH exposures_per_claim AS (
    SELECT claimid, COUNT(*) AS exposure_count
    FROM cc_exposure
    GROUP BY claimid
),
amounts_per_claim AS (
    SELECT
        claimid,
        SUM(CASE WHEN transactiontype = 'payment' THEN amount ELSE 0 END) AS paid_amount,
        SUM(CASE WHEN transactiontype = 'recovery' THEN amount ELSE 0 END) AS recovery_amount,
        SUM(CASE WHEN transactiontype = 'reserve' THEN amount ELSE 0 END) AS reserve_amount
    FROM cc_transaction
    GROUP BY claimid
)
SELECT
    c.lossstate AS loss_state,
    CAST(date_trunc('month', c.lossdate) AS DATE) AS loss_month,
    COUNT(*) AS claim_count,
    SUM(CASE WHEN c.status = 'open' THEN 1 ELSE 0 END) AS open_claim_count,
    SUM(CASE WHEN c.status = 'closed' THEN 1 ELSE 0 END) AS closed_claim_count,
    SUM(COALESCE(e.exposure_count, 0)) AS exposure_count,
    SUM(COALESCE(a.reserve_amount, 0) + COALESCE(a.paid_amount, 0) - COALESCE(a.recovery_amount, 0)) AS incurred_amount,
    SUM(COALESCE(a.paid_amount, 0)) AS paid_amount,
    SUM(COALESCE(a.recovery_amount, 0)) AS recovery_amount
FROM cc_claim AS c
LEFT JOIN exposures_per_claim AS e ON e.claimid = c.id
LEFT JOIN amounts_per_claim AS a ON a.claimid = c.id
GROUP BY c.lossstate, CAST(date_trunc('month', c.lossdate) AS DATE)
ORDER BY loss_state, loss_month
