-- Sliding log refund (see sliding_log.lua for the state). Removes the newest hits
-- still in the window, newest first, the last one only in part (rewritten with its
-- remaining cost) if it cost more than what is left to give back; expired hits are
-- pruned, never given back. Members or totals that do not parse are recounted as in
-- the hit script. Reply: ''.
local nwin = #KEYS / 2
for i = 1, nwin do
  local limit, period = R[2 * i - 1], R[2 * i]
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  local horizon = now - period + 1
  redis.call('ZREMRANGEBYSCORE', z, '-inf', horizon)
  local back = cost
  while back > 0 do
    local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
    if #last == 0 then break end
    local seq, c = string.match(last[1], '^(.*):(%d+)$')
    c = tonumber(c) or 0
    redis.call('ZREM', z, last[1])
    if c > back then
      redis.call('ZADD', z, last[2], seq .. ':' .. (c - back))
      back = 0
    else
      back = back - c
    end
  end
  local total = 0
  for _, member in ipairs(redis.call('ZRANGE', z, 0, -1)) do
    total = total + (tonumber(string.match(member, ':(%d+)$')) or 0)
  end
  if redis.call('EXISTS', m) == 1 then redis.call('HSET', m, 't', total) end
end
return out
