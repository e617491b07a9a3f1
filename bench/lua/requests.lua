-- latchkey-bench, dynamic requests: each request is picked at random from
-- requests built once per thread in init(), so the load generator spends
-- its time on the wire, not in Lua.
--
-- BENCH (written by latchkey-bench) holds:
--   mode        "bearer" | "cookie" | "introspect" | "login" | "login-wrong" | "mixed"
--               | "login-totp"
--   host        the Host header value
--   tokens      file of tokens, one per line (valid ones, or unknown ones)
--   throwaway   file of tokens that "mixed" logs out, each at most once per run
--   offset      where in `throwaway` this run starts (so a warm-up run and the
--               measured run revoke different sessions)
--   totp_users  file of the users that "login-totp" logs in, one per line
--   totp_codes  file of their codes: per line a step, then each user's code
--   totp_offset where in `totp_users` this run starts (as `offset`)
--   totp_step   seconds per TOTP step
--   cookie      the session cookie's name
--   users       { "name", ... }; password, wrong_password

local function read_lines(path)
   local lines = {}
   for line in io.lines(path) do
      if #line > 0 then
         lines[#lines + 1] = line
      end
   end
   assert(#lines > 0, "no lines in " .. path)
   return lines
end

local function head(method, path)
   return method .. " " .. path .. " HTTP/1.1\r\nHost: " .. BENCH.host .. "\r\n"
end

local function verify_bearer(token)
   return head("GET", "/verify") .. "Authorization: Bearer " .. token .. "\r\n\r\n"
end

local function verify_cookie(token)
   return head("GET", "/verify") .. "Cookie: " .. BENCH.cookie .. "=" .. token .. "\r\n\r\n"
end

local function post(path, content_type, body, extra)
   return head("POST", path) .. (extra or "") .. "Content-Type: " .. content_type
      .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end

local function introspect(token)
   return post("/introspect", "application/x-www-form-urlencoded", "token=" .. token)
end

local function login(user, password, totp)
   -- Names, passwords and codes are plain ASCII without quotes or backslashes.
   local body = '{"username":"' .. user .. '","password":"' .. password .. '"'
   if totp then
      body = body .. ',"totp":"' .. totp .. '"'
   end
   return post("/login", "application/json", body .. "}")
end

-- { [step] = { code of user 1, code of user 2, ... } }
local function read_codes(path)
   local codes = {}
   for line in io.lines(path) do
      local step, rest = line:match("^(%d+) (.*)$")
      if step then
         local list = {}
         for code in rest:gmatch("%d+") do
            list[#list + 1] = code
         end
         codes[tonumber(step)] = list
      end
   end
   return codes
end

local function logout(token)
   return post("/logout", "application/x-www-form-urlencoded", "",
      "Authorization: Bearer " .. token .. "\r\n")
end

local function map(list, f)
   local out = {}
   for i, v in ipairs(list) do
      out[i] = f(v)
   end
   return out
end

local main, logins, throwaway
local next_throwaway
local totp_users, totp_codes, next_totp

function init(args)
   math.randomseed(os.time() + 7919 * (thread_id or 0))
   local mode = BENCH.mode
   if mode == "bearer" or mode == "mixed" then
      main = map(read_lines(BENCH.tokens), verify_bearer)
   elseif mode == "cookie" then
      main = map(read_lines(BENCH.tokens), verify_cookie)
   elseif mode == "introspect" then
      main = map(read_lines(BENCH.tokens), introspect)
   elseif mode == "login" then
      main = map(BENCH.users, function(u) return login(u, BENCH.password) end)
   elseif mode == "login-wrong" then
      main = map(BENCH.users, function(u) return login(u, BENCH.wrong_password) end)
   elseif mode == "login-totp" then
      totp_users = read_lines(BENCH.totp_users)
      totp_codes = read_codes(BENCH.totp_codes)
      -- Threads take interleaved users, as "mixed" takes tokens.
      next_totp = BENCH.totp_offset + (thread_id or 0)
   else
      error("unknown BENCH.mode " .. tostring(mode))
   end
   if mode == "mixed" then
      logins = map(BENCH.users, function(u) return login(u, BENCH.password) end)
      throwaway = read_lines(BENCH.throwaway)
      -- Threads take interleaved tokens: no two requests revoke the same one
      -- until the pool wraps around.
      next_throwaway = BENCH.offset + (thread_id or 0)
   end
end

local random = math.random

-- Every login a first use of its step: the next user of the pool, with the
-- code of the step it is sent in. A user comes round again only after the
-- whole pool has, which latchkey-bench sizes to take over one step.
local function next_totp_login()
   local i = next_totp % #totp_users + 1
   next_totp = next_totp + BENCH.threads
   local codes = totp_codes[math.floor(os.time() / BENCH.totp_step)]
   -- A step the run outlasted the codes for sends no valid code: a 401, counted.
   return login(totp_users[i], BENCH.password, codes and codes[i] or "none")
end

function request()
   if totp_users then
      return next_totp_login()
   end
   if logins then
      local r = random()
      if r < 0.04 then
         return logins[random(#logins)]
      elseif r < 0.05 then
         local token = throwaway[next_throwaway % #throwaway + 1]
         next_throwaway = next_throwaway + BENCH.threads
         return logout(token)
      end
   end
   return main[random(#main)]
end
