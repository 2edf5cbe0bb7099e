-- Fixed window. Per window R: limit, period (us), s = 2 * limit + 1, m = floor(2**53 / s).
-- KEYS[i]: one integer, tag * s + count, tag = window index mod m (exact in Lua's
-- doubles): a hit is one INCRBY. A value that is not a count of this window (another
-- tag: an older window, a fresh key; or a count above the limit, which no hit writes)
-- counts as 0; a non-integer one is a data error (scalekit resets the key). Keys
-- expire when their window ends.
for i = 1, #KEYS do
  local b = 4 * i
  local limit, period, s = R[b - 3], R[b - 2], R[b - 1]
  local idx = math.floor(now / period)
  local base = (idx % R[b]) * s
  local reset = (idx + 1) * period - now
  local k = KEYS[i]
  if commit and allok and cost <= limit then
    local n = redis.call('INCRBY', k, cost) - base
    if n < cost or n - cost > limit then  -- not a state of this window: it starts now
      redis.call('SET', k, base + cost, 'PX', math.ceil(reset / 1000))
      n = cost
    elseif n == cost then  -- a fresh key (tag 0), or one given back by a denial
      redis.call('PEXPIRE', k, math.ceil(reset / 1000))
    end
    if n > limit then
      allok = false
      -- all or nothing: give back what this window and the earlier ones took
      for j = 1, i do redis.call('DECRBY', KEYS[j], cost) end
      out = out .. string.format(' 0 %d %d %d', limit - n + cost, reset, reset)
    else
      out = out .. string.format(' 1 %d %d 0', limit - n, reset)
    end
  else
    local count = (tonumber(redis.call('GET', k)) or base) - base
    if count < 1 or count > limit then count = 0 end
    if cost > limit then
      allok = false
      out = out .. string.format(' 0 %d %d -1', limit - count, reset)
    elseif count + cost <= limit then
      out = out .. string.format(' 1 %d %d 0', limit - count, count > 0 and reset or 0)
    else
      allok = false
      out = out .. string.format(' 0 %d %d %d', limit - count, reset, reset)
    end
  end
end
return out
