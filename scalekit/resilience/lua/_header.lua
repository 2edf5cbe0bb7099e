-- Shared prologue of the circuit-breaker scripts (scalekit.resilience._shared).
-- KEYS: [1] state hash, [2] window hash, [3] probes zset (one {hash tag}).
-- ARGV: [1] now ('' = Redis TIME), [2] failure_threshold (0 = off),
--       [3] failure rate threshold (0 = off), [4] slow-call rate threshold (0 = off),
--       [5] window seconds (0 = no window), [6] minimum calls, [7] open seconds,
--       [8] max open seconds (0 = fixed), [9] backoff multiplier, [10] jitter,
--       [11] a uniform random number in [0, 1) drawn by the client, [12] half-open
--       max calls, [13] probe timeout seconds, [14] key ttl ms; then per script.
-- Reply: one string "state remaining epoch token": remaining is the seconds until
-- an open breaker admits a probe (or, half-open, until the oldest probe's deadline);
-- token is the probe token granted by admit.lua, else '-'.
if redis.replicate_commands then redis.replicate_commands() end
local S, W, PR = KEYS[1], KEYS[2], KEYS[3]
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local threshold = tonumber(ARGV[2])
local rate_thr = tonumber(ARGV[3])
local slow_thr = tonumber(ARGV[4])
local window_s = tonumber(ARGV[5])
local min_calls = tonumber(ARGV[6])
local open_s = tonumber(ARGV[7])
local max_open_s = tonumber(ARGV[8])
local mult = tonumber(ARGV[9])
local jitter = tonumber(ARGV[10])
local u = tonumber(ARGV[11])
local half_max = tonumber(ARGV[12])
local probe_timeout = tonumber(ARGV[13])
local ttl = tonumber(ARGV[14])
local BUCKETS = 10

local function fmt(x) return string.format('%.17g', x) end

local h = redis.call('HMGET', S, 'st', 'until', 'trips', 'consec', 'epoch', 'admitted', 'succ')
local st = h[1] or 'closed'
local until_ = tonumber(h[2]) or 0
local trips = tonumber(h[3]) or 0
local consec = tonumber(h[4]) or 0
local epoch = tonumber(h[5]) or 0
local admitted = tonumber(h[6]) or 0
local succ = tonumber(h[7]) or 0

local function save()
  redis.call('HSET', S, 'st', st, 'until', fmt(until_), 'trips', trips, 'consec', consec,
    'epoch', epoch, 'admitted', admitted, 'succ', succ)
  redis.call('PEXPIRE', S, ttl)
end

local function move(to)
  st = to
  epoch = epoch + 1
  consec = 0
  admitted = 0
  succ = 0
  redis.call('DEL', W, PR)
end

local function trip()
  trips = trips + 1
  local d = open_s
  if max_open_s > 0 and trips > 1 then
    local k = trips - 1
    if k * math.log(mult) >= math.log(max_open_s / d) then d = max_open_s
    else d = math.min(max_open_s, d * mult ^ k) end
  end
  if jitter > 0 then d = d * (1 - jitter * u) end
  until_ = now + d
  move('open')
end

local function close()
  trips = 0
  move('closed')
end

-- the oldest pending probe's deadline, or nil
local function oldest_probe()
  local first = redis.call('ZRANGE', PR, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return nil
end

local function reply(token)
  local remaining = 0
  if st == 'open' then
    remaining = math.max(0, until_ - now)
  elseif st == 'forced_open' then
    remaining = -1
  elseif st == 'half_open' and admitted >= half_max then
    local d = oldest_probe()
    if d then remaining = math.max(0, d - now) end
  end
  return st .. ' ' .. fmt(remaining) .. ' ' .. epoch .. ' ' .. (token or '-')
end
