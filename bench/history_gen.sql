-- Generator of bench/history.sh: 7 days of what :'instances' instances
-- write (per-minute rollups of :'routes' routes, the 4 health components
-- sampled every 10 s), up to :'now' (epoch ms). The same text runs on
-- SQLite and PostgreSQL; bench/history.sh substitutes the :'name' values.
-- Only the tables the server writes per minute and per sample are filled:
-- the aggregated tiers are the server's compaction's to write.
WITH RECURSIVE
    m(n) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT n + 1 FROM m WHERE n < 10080),
    r(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM r WHERE k < :'routes'),
    i(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM i WHERE j < :'instances')
INSERT INTO metric_rollups (minute, instance, route, requests, errors, buckets)
SELECT (:'now' - :'now' % 60000) - n * 60000, 'gen-' || j, 'GET /api/bench/' || k,
       20 + (n + k) % 40,
       CASE WHEN (n + k + j) % 97 = 0 THEN 1 ELSE 0 END,
       '[' || ((n + k) % 40) || ',10,5,3,2,0,0,0,0,0,0,0,0,0,0]'
FROM m, r, i;

WITH RECURSIVE
    s(n) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT n + 1 FROM s WHERE n < 60480),
    c(name) AS (VALUES ('auth'), ('database'), ('config'), ('external')),
    i(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM i WHERE j < :'instances')
INSERT INTO health_samples (at, instance, component, status, response_time_ms)
SELECT (:'now' - :'now' % 10000) - n * 10000, 'gen-' || j, name,
       CASE WHEN (n + j) % 1000 = 0 THEN 'degraded' ELSE 'healthy' END,
       1 + n % 7
FROM s, c, i;
