-- Shared prologue, prepended to every rate-limit script by scalekit.backends._lua.
-- ARGV: [1] cost, [2] commit (1 = hit, 0 = peek), [3] now ('' = Redis TIME),
--       then per window: limit, period, capacity.
-- Reply: one string "all_allowed" then per window "allowed remaining reset_after
-- retry_after", space-separated: a single bulk reply parses faster than a nested
-- array in redis-py and arrives in one read.
-- Floats travel as strings (%.17g): Redis truncates Lua numbers to integers in
-- replies and formats number arguments to redis.call with only 14 digits.
if redis.replicate_commands then redis.replicate_commands() end
local cost = tonumber(ARGV[1])
local commit = ARGV[2] == '1'
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local nwin = (#ARGV - 3) / 3
local EPS = 1e-9
local TIME_EPS = 1e-6  -- decisions are exact to a microsecond (see algorithms.py)
local INF = math.huge
local function floor0(x)
  local v = math.floor(x + EPS)
  if v < 0 then return 0 end
  return v
end
local function fmt(x) return string.format('%.17g', x) end
local function ms(seconds)
  local v = math.ceil(seconds * 1000)
  if v < 1 then return 1 end
  return v
end
local function rate(i)
  local b = 3 + (i - 1) * 3
  return tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
end
local results = {}
local writes = {}
local allok = 1
local function push(ok, remaining, reset, retry)
  if not ok then allok = 0 end
  results[#results + 1] = {ok and 1 or 0, remaining, fmt(reset), fmt(retry)}
end
-- Every window allowed and this is a hit: write each window's new state
-- (writes[i] = {value, seconds until the state is worthless}) with its expiry.
local function commit_writes()
  if commit and allok == 1 then
    for i = 1, nwin do
      redis.call('SET', KEYS[i], writes[i][1], 'PX', ms(writes[i][2]))
    end
  end
end
local function reply()
  local out = {allok}
  for _, r in ipairs(results) do
    for _, v in ipairs(r) do out[#out + 1] = v end
  end
  return table.concat(out, ' ')
end
