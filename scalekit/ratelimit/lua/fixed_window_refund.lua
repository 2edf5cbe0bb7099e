-- Fixed window refund (see fixed_window.lua for the state). Gives back up to cost
-- units of the current window's count, never below 0; a value that is not a count of
-- this window is left alone (there is nothing of this window to give back). DECRBY
-- keeps the key's expiry. Reply: ''.
for i = 1, #KEYS do
  local b = 4 * i
  local limit, period, s = R[b - 3], R[b - 2], R[b - 1]
  local idx = math.floor(now / period)
  local base = (idx % R[b]) * s
  local k = KEYS[i]
  local v = tonumber(redis.call('GET', k))
  if v then
    local count = v - base
    if count >= 1 and count <= limit then
      local back = cost
      if back > count then back = count end
      redis.call('DECRBY', k, back)
    end
  end
end
return out
