-- Sliding log (exact). Per window R: limit, period (us). Per window two keys:
-- KEYS[2i-1] a sorted set of "<seq>:<cost>" scored by time (us), KEYS[2i] a hash
-- {t = total, s = sequence}. Values that do not parse count as 0; a total that no hit
-- writes (negative, above the limit) is recounted from the log.
local nwin = #KEYS / 2
for i = 1, nwin do
  local limit, period = R[2 * i - 1], R[2 * i]
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  local horizon = now - period + 1  -- one microsecond of slack, as in algorithms.py
  local total = tonumber(redis.call('HGET', m, 't')) or 0
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', horizon)
  if #expired > 0 then
    for _, member in ipairs(expired) do
      total = total - (tonumber(string.match(member, ':(%d+)$')) or 0)
    end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', horizon)
    redis.call('HSET', m, 't', total)
  end
  if total < 0 or total > limit then
    total = 0
    for _, member in ipairs(redis.call('ZRANGE', z, 0, -1)) do
      total = total + (tonumber(string.match(member, ':(%d+)$')) or 0)
    end
    redis.call('HSET', m, 't', total)
  end
  local reset = 0
  if not (commit and total + cost <= limit) then
    local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
    if #last > 0 then reset = last[2] + period - now end
  end
  if total + cost <= limit then
    if commit then
      out = out .. string.format(' 1 %d %d 0', limit - total - cost, period)
    else
      out = out .. string.format(' 1 %d %d 0', limit - total, reset)
    end
  else
    allok = false
    local retry = -1
    if cost <= limit then
      retry = reset
      local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
      local freed = 0
      for j = 1, #entries, 2 do
        freed = freed + (tonumber(string.match(entries[j], ':(%d+)$')) or 0)
        if total - freed + cost <= limit then
          retry = entries[j + 1] + period - now
          break
        end
      end
    end
    local left = limit - total
    if left < 0 then left = 0 end
    out = out .. string.format(' 0 %d %d %d', left, reset, retry)
  end
end
if commit and allok then
  for i = 1, nwin do
    local period = R[2 * i]
    local z, m = KEYS[2 * i - 1], KEYS[2 * i]
    local seq = redis.call('HINCRBY', m, 's', 1)
    redis.call('HINCRBY', m, 't', cost)
    redis.call('ZADD', z, now, seq .. ':' .. cost)
    local ms = math.ceil(period / 1000)
    redis.call('PEXPIRE', z, ms)
    redis.call('PEXPIRE', m, ms)
  end
end
return out
