-- GCRA. KEYS[i]: the theoretical arrival time (TAT).
for i = 1, nwin do
  local limit, period, burst = rate(i)
  local interval = period / limit
  local tolerance = burst * interval
  local base = now
  local v = redis.call('GET', KEYS[i])
  if v then
    local tat = tonumber(v)
    if tat > now then base = tat end
  end
  local new_tat = base + cost * interval
  local slack = tolerance + TIME_EPS
  if cost <= burst and new_tat - now <= slack then
    if commit then
      push(true, math.min(burst - cost, floor0((slack - (new_tat - now)) / interval)), new_tat - now, 0)
      writes[i] = {fmt(new_tat), new_tat - now}
    else
      push(true, math.min(burst, floor0((slack - (base - now)) / interval)), base - now, 0)
    end
  else
    local retry = new_tat - tolerance - now
    if cost > burst then retry = INF end
    push(false, math.min(burst, floor0((slack - (base - now)) / interval)), base - now, retry)
  end
end
commit_writes()
return reply()
