-- Sliding window refund (see sliding_window.lua for the state). Gives back up to cost
-- units of the current window's count, never below 0: the previous window's hits are
-- history (they only weigh on the current one) and are not given back. The expiry is
-- the one a hit now would set (the end of the next window). Reply: ''.
for i = 1, #KEYS do
  local limit, period = R[2 * i - 1], R[2 * i]
  local idx = math.floor(now / period)
  local elapsed = now - idx * period
  local k = KEYS[i]
  local v = redis.call('GET', k)
  if v then
    local sidx, sp, sc = string.match(v, '^(%d+) (%d+) (%d+)$')
    sp, sc = tonumber(sp), tonumber(sc)
    if tonumber(sidx) == idx and sc <= limit and sp <= limit and sc > 0 then
      local cur = sc - cost
      if cur < 0 then cur = 0 end
      redis.call('SET', k, string.format('%d %d %d', idx, sp, cur), 'PX',
        math.ceil((2 * period - elapsed) / 1000))
    end
  end
end
return out
