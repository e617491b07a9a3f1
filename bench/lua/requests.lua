-- latchkey-bench, dynamic requests: each request is picked at random from
-- requests built once per thread in init(), so the load generator spends
-- its time on the wire, not in Lua.
--
-- BENCH (written by latchkey-bench) holds:
--   mode        "bearer" | "cookie" | "introspect" | "login" | "login-wrong" | "mixed"
--   host        the Host header value
--   tokens      file of tokens, one per line (valid ones, or unknown ones)
--   throwaway   file of tokens that "mixed" logs out, each at most once per run
--   offset      where in `throwaway` this run starts (so a warm-up run and the
--               measured run revoke different sessions)
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

local function login(user, password)
   -- Names and passwords are plain ASCII without quotes or backslashes.
   local body = '{"username":"' .. user .. '","password":"' .. password .. '"}'
   return post("/login", "application/json", body)
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

function request()
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
