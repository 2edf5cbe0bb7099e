-- Token bucket. KEYS[i]: the time at which the bucket was (extrapolated) empty.
for i = 1, nwin do
  local limit, period, capacity = rate(i)
  local r = limit / period
  local tokens = capacity
  local v = redis.call('GET', KEYS[i])
  if v then tokens = math.min(capacity, (now - tonumber(v)) * r) end
  local grace = r * TIME_EPS  -- what one microsecond refills
  if cost <= capacity and tokens + grace + EPS >= cost then
    if commit then
      local left = math.max(0, tokens - cost)
      push(true, math.min(capacity - cost, floor0(left + grace)), (capacity - left) / r, 0)
      writes[i] = {fmt(now - left / r), (capacity - left) / r}
    else
      push(true, math.min(capacity, floor0(tokens + grace)), (capacity - tokens) / r, 0)
    end
  else
    local retry = (cost - tokens) / r
    if cost > capacity then retry = INF end
    push(false, math.min(capacity, floor0(tokens + grace)), (capacity - tokens) / r, retry)
  end
end
commit_writes()
return reply()
