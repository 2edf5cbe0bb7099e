-- Admission when this process' cached view is not CLOSED. ARGV[15]: a probe token.
-- Open past its time -> half-open; a probe past its deadline -> open again;
-- otherwise grant a probe lease while fewer than half_max are out.
local token = ARGV[15]
if st == 'open' and now >= until_ then
  move('half_open')
  save()
end
if st == 'half_open' then
  local expired = redis.call('ZRANGEBYSCORE', PR, '-inf', fmt(now), 'LIMIT', 0, 1)
  if expired[1] then
    trip()  -- a stuck probe counts as a failure
    save()
    return reply(nil)
  end
  if admitted < half_max then
    admitted = admitted + 1
    redis.call('ZADD', PR, fmt(now + probe_timeout), token)
    redis.call('PEXPIRE', PR, ttl)
    save()
    return reply(token)
  end
end
return reply(nil)
