-- One outcome. ARGV[15] kind ('c' = admitted while closed, 'p' = probe),
-- [16] the epoch ('c') or the probe token ('p'), [17] 's' success / 'f' failure /
-- 'i' ignored, [18] '1' if the call was slow.
local kind, ticket, outcome, slow = ARGV[15], ARGV[16], ARGV[17], ARGV[18] == '1'
if kind == 'p' then
  if st ~= 'half_open' or redis.call('ZREM', PR, ticket) == 0 then
    return reply(nil)  -- stale: the probe's deadline passed or the state moved on
  end
  if outcome == 'i' then
    admitted = admitted - 1
  elseif outcome == 'f' or slow then
    trip()
  else
    succ = succ + 1
    if succ >= half_max then close() end
  end
  save()
  return reply(nil)
end
if st ~= 'closed' or tonumber(ticket) ~= epoch or outcome == 'i' then
  return reply(nil)
end
local failed = outcome == 'f'
if failed then consec = consec + 1 else consec = 0 end
local tripped = threshold > 0 and consec >= threshold
if not tripped and window_s > 0 then
  local width = window_s / BUCKETS
  local cur = math.floor(now / width)
  redis.call('HINCRBY', W, 'c' .. cur, 1)
  if failed then redis.call('HINCRBY', W, 'f' .. cur, 1) end
  if slow then redis.call('HINCRBY', W, 's' .. cur, 1) end
  redis.call('PEXPIRE', W, ttl)
  local all = redis.call('HGETALL', W)
  local calls, fails, slows = 0, 0, 0
  for i = 1, #all, 2 do
    local field = all[i]
    local idx = tonumber(string.sub(field, 2))
    if idx <= cur - BUCKETS then
      redis.call('HDEL', W, field)
    else
      local n = tonumber(all[i + 1])
      local c = string.sub(field, 1, 1)
      if c == 'c' then calls = calls + n elseif c == 'f' then fails = fails + n
      else slows = slows + n end
    end
  end
  if calls >= min_calls and ((rate_thr > 0 and fails >= rate_thr * calls)
      or (slow_thr > 0 and slows >= slow_thr * calls)) then
    tripped = true
  end
end
if tripped then trip() end
save()
return reply(nil)
