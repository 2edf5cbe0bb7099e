-- Sliding log (exact). Per window two keys: KEYS[2i-1] a sorted set of
-- "<seq>:<cost>" scored by time, KEYS[2i] a hash {t = total, s = sequence}.
for i = 1, nwin do
  local limit, period = rate(i)
  local z, m = KEYS[2 * i - 1], KEYS[2 * i]
  local horizon = fmt(now - period + TIME_EPS)
  local total = tonumber(redis.call('HGET', m, 't') or '0')
  local expired = redis.call('ZRANGEBYSCORE', z, '-inf', horizon)
  if #expired > 0 then
    for _, member in ipairs(expired) do
      total = total - tonumber(string.match(member, ':(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', horizon)
    redis.call('HSET', m, 't', total)
  end
  local function newest_reset()
    local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
    if #last == 0 then return 0 end
    return tonumber(last[2]) + period - now
  end
  if total + cost <= limit then
    if commit then
      push(true, limit - total - cost, period, 0)
      writes[i] = true
    else
      push(true, limit - total, newest_reset(), 0)
    end
  else
    local reset = newest_reset()
    local retry = reset
    if cost > limit then
      retry = INF
    else
      local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
      local freed = 0
      for j = 1, #entries, 2 do
        freed = freed + tonumber(string.match(entries[j], ':(%d+)$'))
        if total - freed + cost <= limit then
          retry = tonumber(entries[j + 1]) + period - now
          break
        end
      end
    end
    push(false, math.max(0, limit - total), reset, retry)
  end
end
if commit and allok == 1 then
  for i = 1, nwin do
    local _, period = rate(i)
    local z, m = KEYS[2 * i - 1], KEYS[2 * i]
    local seq = redis.call('HINCRBY', m, 's', 1)
    redis.call('HINCRBY', m, 't', cost)
    redis.call('ZADD', z, fmt(now), seq .. ':' .. cost)
    redis.call('PEXPIRE', z, ms(period))
    redis.call('PEXPIRE', m, ms(period))
  end
end
return reply()
