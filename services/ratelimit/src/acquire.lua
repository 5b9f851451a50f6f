-- Takes rate-limit units for a batch of tasks, all of a task's units or none, in the
-- batch's order. A bucket is a hash {t = units left, w = start of its window (ms),
-- l = the limit it was filled to}; a window that has passed starts again full.
--
-- A Redis that lost its data (restarted empty) would hand out a window's units again.
-- The epoch hash (the last key) says since when this Redis has buckets; when it is
-- missing although the service saw it before (ARGV[3] = 1), the data was lost, and a
-- bucket made in the window of the loss starts empty until that window ends: never
-- more than a window's units, at the cost of waiting out that one window.
--
-- KEYS: the buckets, each once, then the epoch hash.
-- ARGV[1]: now (ms); ARGV[2]: number of tasks; ARGV[3]: 1 if the epoch was seen
-- before; then per task: its number of needs n, then n times: bucket index (1-based
-- into KEYS), units, limit, window (ms).
-- Returns, per task: {1, now} granted, or {0, key index, until (ms), code} where code
-- 1 = too few units left in the window, 2 = more units than the limit.
local now = tonumber(ARGV[1])
local tasks = tonumber(ARGV[2])
local seen = tonumber(ARGV[3])
local state = {}

local epoch = KEYS[#KEYS]
local lost_at = nil
local e = redis.call('HMGET', epoch, 'at', 'lost')
if e[1] == false then
  redis.call('HSET', epoch, 'at', now, 'lost', seen)
  if seen == 1 then
    lost_at = now
  end
elseif e[2] == '1' then
  lost_at = tonumber(e[1])
end

local function bucket(i, limit, window)
  local b = state[i]
  if b == nil then
    local v = redis.call('HMGET', KEYS[i], 't', 'w', 'l')
    b = { t = tonumber(v[1]), w = tonumber(v[2]), l = tonumber(v[3]), dirty = false }
    state[i] = b
  end
  if b.w == nil and lost_at ~= nil and now < lost_at + window then
    b.t, b.w, b.l, b.dirty = 0, lost_at, limit, true
  elseif b.w == nil or now >= b.w + window then
    b.t, b.w, b.l, b.dirty = limit, now, limit, true
  elseif b.l ~= limit then
    -- The limit changed within the window: what was taken stays taken.
    b.t, b.l, b.dirty = math.max(0, b.t + limit - b.l), limit, true
  end
  b.window = window
  return b
end

local out = {}
local pos = 4
for _ = 1, tasks do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local needs = {}
  local short = nil
  for j = 1, n do
    local i, units, limit, window =
      tonumber(ARGV[pos]), tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3])
    pos = pos + 4
    local b = bucket(i, limit, window)
    needs[j] = { b = b, units = units }
    if short == nil then
      if units > limit then
        short = { i, now + window, 2 }
      elseif b.t < units then
        short = { i, b.w + window, 1 }
      end
    end
  end
  if short == nil then
    for _, need in ipairs(needs) do
      need.b.t = need.b.t - need.units
      need.b.dirty = true
    end
    out[#out + 1] = { 1, now }
  else
    out[#out + 1] = { 0, short[1], short[2], short[3] }
  end
end

for i, b in pairs(state) do
  if b.dirty then
    redis.call('HSET', KEYS[i], 't', b.t, 'w', b.w, 'l', b.l)
    redis.call('PEXPIRE', KEYS[i], b.window * 2 + 1000)
  end
end
return out
