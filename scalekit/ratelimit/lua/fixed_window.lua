-- Fixed window. Per window R: limit, period (us). KEYS[i]: one integer,
-- tag * S + count, where S = 2 * limit + 1 and tag = window index mod M (M * S <= 2**53,
-- exact in Lua): a hit is one INCRBY. A value whose tag is not this window's (an older
-- window, a fresh key, a corrupt integer) counts as 0; a non-integer one is a data error
-- (scalekit resets the key). Keys expire when their window ends.
local nwin = #KEYS
local bases, counts = {}, {}
for i = 1, nwin do
  local limit, period = R[2 * i - 1], R[2 * i]
  local s = 2 * limit + 1
  local idx = math.floor(now / period)
  local base = (idx % math.floor(9007199254740992 / s)) * s
  local reset = (idx + 1) * period - now
  local k = KEYS[i]
  local count, ok
  if cost > limit then
    local v = tonumber(redis.call('GET', k)) or base
    count = v - base
    if count < 1 or count > limit then count = 0 end
    out = out .. string.format(' 0 %d %d -1', limit - count, reset)
    allok = false
  elseif commit and allok then
    local n = redis.call('INCRBY', k, cost) - base
    if n < cost or n >= s then  -- another window's state: this window starts now
      redis.call('SET', k, base + cost, 'PX', math.ceil(reset / 1000))
      n = cost
    elseif n == cost then  -- a fresh key (tag 0)
      redis.call('PEXPIRE', k, math.ceil(reset / 1000))
    end
    if n > limit then
      redis.call('DECRBY', k, cost)
      out = out .. string.format(' 0 %d %d %d', limit - n + cost, reset, reset)
      allok = false
      for j = 1, i - 1 do  -- all or nothing: give back what the earlier windows took
        if counts[j] == cost then redis.call('DEL', KEYS[j]) else redis.call('DECRBY', KEYS[j], cost) end
      end
    else
      out = out .. string.format(' 1 %d %d 0', limit - n, reset)
    end
    counts[i] = n
  else
    local v = tonumber(redis.call('GET', k)) or base
    count = v - base
    if count < 1 or count > limit then count = 0 end
    if count + cost <= limit then
      out = out .. string.format(' 1 %d %d 0', limit - count, count > 0 and reset or 0)
    else
      out = out .. string.format(' 0 %d %d %d', limit - count, reset, reset)
      allok = false
    end
  end
end
return out
