-- llm-bridge shared limits, one key's state in six Redis keys that share a hash tag
-- (cluster-safe): KEYS = req (ZSET ticket -> admitted at), tok (ZSET ticket -> admitted
-- at), tokn (HASH ticket -> tokens counted, '_sum' -> their sum), live (ZSET ticket ->
-- lease end), livn (HASH ticket -> tokens reserved), spend (HASH d, m, dt, dc, mt, mc, tt,
-- tc, r, seeded). Time is Redis's own clock, so that instances whose clocks differ agree.
-- ARGV[1] is the operation; each returns an array whose first element is a status.
local K_req, K_tok, K_tokn, K_live, K_livn, K_spend = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local WINDOW = 60000
local DAY = 86400000

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function num(v) return tonumber(v) or 0 end

-- Months since 0000-03 of the proleptic Gregorian calendar: only equality matters.
local function month_of(day)
  local z = day + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  return (yoe + era * 400) * 12 + mp
end

-- New day or month: its counters start again.
local function roll()
  local day = math.floor(now / DAY)
  local month = month_of(day)
  local s = redis.call('HMGET', K_spend, 'd', 'm')
  if num(s[1]) ~= day then redis.call('HSET', K_spend, 'd', day, 'dt', 0, 'dc', 0) end
  if num(s[2]) ~= month then redis.call('HSET', K_spend, 'm', month, 'mt', 0, 'mc', 0) end
end

-- Requests and tokens that left the window; leases that ended (an instance died
-- mid-request) give back their place and reservation.
local function prune()
  redis.call('ZREMRANGEBYSCORE', K_req, '-inf', now - WINDOW)
  local old = redis.call('ZRANGEBYSCORE', K_tok, '-inf', now - WINDOW)
  if #old > 0 then
    local sum = num(redis.call('HGET', K_tokn, '_sum'))
    for _, id in ipairs(old) do
      sum = sum - num(redis.call('HGET', K_tokn, id))
      redis.call('HDEL', K_tokn, id)
    end
    redis.call('ZREMRANGEBYSCORE', K_tok, '-inf', now - WINDOW)
    redis.call('HSET', K_tokn, '_sum', math.max(sum, 0))
  end
  local dead = redis.call('ZRANGEBYSCORE', K_live, '-inf', now)
  if #dead > 0 then
    local r = num(redis.call('HGET', K_spend, 'r'))
    for _, id in ipairs(dead) do
      r = r - num(redis.call('HGET', K_livn, id))
      redis.call('HDEL', K_livn, id)
    end
    redis.call('ZREMRANGEBYSCORE', K_live, '-inf', now)
    redis.call('HSET', K_spend, 'r', math.max(r, 0))
  end
end

-- Tokens left in the tightest token budget after what is spent and reserved; -1: none.
local function room(bd, bm, bt)
  local s = redis.call('HMGET', K_spend, 'dt', 'mt', 'tt', 'r')
  local r = num(s[4])
  local best = -1
  for i, b in ipairs({bd, bm, bt}) do
    if b >= 0 then
      local left = math.max(b - (num(s[i]) + r), 0)
      if best < 0 or left < best then best = left end
    end
  end
  return best
end

local op = ARGV[1]

if op == 'admit' then
  -- ticket, estimate, rpm, tpm, max_concurrent, budget tokens day/month/total, budget cost
  -- day/month/total, lease ms, whether the key has budgets (-1: no limit)
  local ticket, estimate = ARGV[2], tonumber(ARGV[3])
  local rpm, tpm, conc = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local bd, bm, bt = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
  local cd, cm, ct = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
  local lease, budgets = tonumber(ARGV[13]), ARGV[14] == '1'
  if budgets and redis.call('HEXISTS', K_spend, 'seeded') == 0 then
    return {-1, 0, 0, 0, 0, now}
  end
  prune()
  roll()
  local nreq = redis.call('ZCARD', K_req)
  local ntok = num(redis.call('HGET', K_tokn, '_sum'))
  if budgets then
    local s = redis.call('HMGET', K_spend, 'dt', 'dc', 'mt', 'mc', 'tt', 'tc', 'r')
    local r = num(s[7])
    -- The order of the local backend: total, month, day; tokens before cost.
    if bt >= 0 and num(s[5]) + r >= bt then return {10, nreq, ntok, 0, 0, now} end
    if ct >= 0 and num(s[6]) >= ct then return {11, nreq, ntok, 0, 0, now} end
    if bm >= 0 and num(s[3]) + r >= bm then return {12, nreq, ntok, 0, 0, now} end
    if cm >= 0 and num(s[4]) >= cm then return {13, nreq, ntok, 0, 0, now} end
    if bd >= 0 and num(s[1]) + r >= bd then return {14, nreq, ntok, 0, 0, now} end
    if cd >= 0 and num(s[2]) >= cd then return {15, nreq, ntok, 0, 0, now} end
  end
  if conc >= 0 and redis.call('ZCARD', K_live) >= conc then
    return {3, nreq, ntok, 1000, 0, now}
  end
  if rpm >= 0 and nreq >= rpm then
    local first = redis.call('ZRANGE', K_req, 0, 0, 'WITHSCORES')
    return {1, nreq, ntok, num(first[2]) + WINDOW - now, 0, now}
  end
  if tpm >= 0 and ntok >= tpm then
    local wait = WINDOW
    local left = ntok
    local entries = redis.call('ZRANGE', K_tok, 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      left = left - num(redis.call('HGET', K_tokn, entries[i]))
      if left < tpm then
        wait = num(entries[i + 1]) + WINDOW - now
        break
      end
    end
    return {2, nreq, ntok, wait, 0, now}
  end
  redis.call('ZADD', K_req, now, ticket)
  redis.call('PEXPIRE', K_req, WINDOW + 1000)
  if tpm >= 0 then
    redis.call('ZADD', K_tok, now, ticket)
    redis.call('HSET', K_tokn, ticket, estimate)
    ntok = redis.call('HINCRBY', K_tokn, '_sum', estimate)
    redis.call('PEXPIRE', K_tok, WINDOW + 1000)
    redis.call('PEXPIRE', K_tokn, WINDOW + 1000)
  end
  local reserved = 0
  if budgets then
    reserved = estimate
    local left = room(bd, bm, bt)
    if left >= 0 and left < reserved then reserved = left end
    redis.call('HINCRBY', K_spend, 'r', reserved)
  end
  redis.call('ZADD', K_live, now + lease, ticket)
  redis.call('HSET', K_livn, ticket, reserved)
  redis.call('PEXPIRE', K_live, lease + 1000)
  redis.call('PEXPIRE', K_livn, lease + 1000)
  return {0, nreq + 1, ntok, 0, reserved, now}
end

if op == 'extend' then
  -- ticket, extra, budget tokens day/month/total
  local ticket, extra = ARGV[2], tonumber(ARGV[3])
  if redis.call('HEXISTS', K_livn, ticket) == 0 then return {0} end
  roll()
  local left = room(tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
  local granted = extra
  if left >= 0 and left < granted then granted = left end
  redis.call('HINCRBY', K_livn, ticket, granted)
  redis.call('HINCRBY', K_spend, 'r', granted)
  return {granted}
end

-- The request's place and reservation go back.
local function leave(ticket)
  local reserved = redis.call('HGET', K_livn, ticket)
  if reserved then
    redis.call('HDEL', K_livn, ticket)
    redis.call('ZREM', K_live, ticket)
    -- Not -0: Redis takes "-0" for no integer.
    if num(reserved) ~= 0 then redis.call('HINCRBY', K_spend, 'r', 0 - num(reserved)) end
  end
end

-- Corrects the request's estimate in the tokens-per-minute window.
local function recount(ticket, tokens)
  local old = redis.call('HGET', K_tokn, ticket)
  if old then
    redis.call('HSET', K_tokn, ticket, tokens)
    redis.call('HINCRBY', K_tokn, '_sum', tokens - num(old))
  end
end

if op == 'settle' then
  -- ticket, tokens, cost
  local ticket, tokens, cost = ARGV[2], tonumber(ARGV[3]), ARGV[4]
  leave(ticket)
  recount(ticket, tokens)
  roll()
  redis.call('HINCRBY', K_spend, 'dt', tokens)
  redis.call('HINCRBY', K_spend, 'mt', tokens)
  redis.call('HINCRBY', K_spend, 'tt', tokens)
  redis.call('HINCRBYFLOAT', K_spend, 'dc', cost)
  redis.call('HINCRBYFLOAT', K_spend, 'mc', cost)
  redis.call('HINCRBYFLOAT', K_spend, 'tc', cost)
  return {0}
end

if op == 'release' then
  leave(ARGV[2])
  recount(ARGV[2], 0)
  return {0}
end

if op == 'seed' then
  -- spent day tokens, day cost, month tokens, month cost, total tokens, total cost (from
  -- the usage records). Only the first instance to seed after a restart writes.
  if redis.call('HEXISTS', K_spend, 'seeded') == 1 then return {0} end
  local day = math.floor(now / DAY)
  local r = num(redis.call('HGET', K_spend, 'r'))
  redis.call('HSET', K_spend, 'd', day, 'm', month_of(day), 'dt', ARGV[2], 'dc', ARGV[3],
    'mt', ARGV[4], 'mc', ARGV[5], 'tt', ARGV[6], 'tc', ARGV[7], 'r', r, 'seeded', 1)
  return {1}
end

return redis.error_reply('unknown operation ' .. tostring(op))
