-- latchkey-bench, status counting: per-thread counters that report.lua sums
-- in done(). Loaded only where statuses tell the story (logins answer 200,
-- 401 or 503), since a response() callback costs the load generator time.

s2xx, s3xx, s401, s429, s503, sother = 0, 0, 0, 0, 0, 0

function response(status, headers, body)
   if status == 401 then
      s401 = s401 + 1
   elseif status == 503 then
      s503 = s503 + 1
   elseif status == 429 then
      s429 = s429 + 1
   elseif status >= 200 and status < 300 then
      s2xx = s2xx + 1
   elseif status >= 300 and status < 400 then
      s3xx = s3xx + 1
   else
      sother = sother + 1
   end
end
