-- The edge checks of REST requests and the status fix-ups of REST responses. Sits before the
-- transcoder, so it sees the REST request and, on the way back, the transcoded (JSON) response.
-- `LIMITS` and `ROUTES` are rendered above this file by trainyard.gateway.config from the
-- contract's google.api.http rules and the one table of body limits; errors are answered as
-- plain text and become JSON bodies through the listener's local_reply_config.

local function is_grpc(content_type)
  return string.sub(content_type, 1, 16) == "application/grpc"
end

-- Deepest nesting of objects/arrays in a JSON text, strings skipped; stops counting once
-- past `limit` (invalid JSON is counted as far as it goes; the transcoder rejects it later).
local function json_depth(text, limit)
  local depth, pos = 0, 1
  while true do
    local at, _, ch = string.find(text, '([%[%]{}"])', pos)
    if at == nil then
      return depth
    end
    if ch == '"' then
      local scan = at + 1
      while true do
        local q, _, qc = string.find(text, '(["\\])', scan)
        if q == nil then
          return 0
        end
        if qc == "\\" then
          scan = q + 2
        else
          pos = q + 1
          break
        end
      end
    elseif ch == "{" or ch == "[" then
      depth = depth + 1
      if depth > limit then
        return depth
      end
      pos = at + 1
    else
      depth = depth - 1
      pos = at + 1
    end
  end
end

-- The rule for (path, method), or nil and the methods the path allows (nil: unknown path).
local function route_of(path, method)
  local allowed = nil
  for _, route in ipairs(ROUTES) do
    if string.match(path, route.pattern) then
      if route.methods[method] ~= nil then
        return route.methods[method], nil
      end
      allowed = allowed or {}
      for verb, _ in pairs(route.methods) do
        allowed[verb] = true
      end
    end
  end
  if allowed == nil then
    return nil, nil
  end
  local verbs = {}
  for verb, _ in pairs(allowed) do
    table.insert(verbs, verb)
  end
  table.sort(verbs)
  return nil, table.concat(verbs, ", ")
end

local function refuse(handle, status, message, extra)
  local headers = {[":status"] = status, ["content-type"] = "text/plain"}
  for k, v in pairs(extra or {}) do
    headers[k] = v
  end
  handle:respond(headers, message)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if is_grpc(headers:get("content-type") or "") then
    return
  end
  local full = headers:get(":path") or ""
  if #full > LIMITS.url then
    refuse(handle, "414", string.format(
      "the URL is %d bytes long; at most %d are accepted", #full, LIMITS.url))
    return
  end
  local path = string.match(full, "^[^?#]*")
  local method = headers:get(":method") or ""
  local rule, allowed = route_of(path, method)
  if rule == nil then
    if allowed ~= nil then
      refuse(handle, "405", string.format(
        "method %s is not allowed on %s; allowed: %s", method, path, allowed),
        {["allow"] = allowed})
    end
    return -- unknown paths: the transcoder answers 404
  end
  if rule.limit < 0 then
    return -- streamed bodies (uploads) are limited by their service
  end
  local length = tonumber(headers:get("content-length") or "")
  -- HTTP/1.1 can answer before the body arrives (Envoy then closes the connection); over
  -- HTTP/2 an early answer resets the stream, which clients report as an error instead of the
  -- 413, so there the body is read first (Envoy itself refuses what its stream buffer can't hold).
  local early = string.sub(handle:streamInfo():protocol() or "", 1, 6) == "HTTP/1"
  if length ~= nil and length > rule.limit and early then
    refuse(handle, "413", string.format(
      "the request body is %d bytes; %s %s accepts at most %d", length, method, path, rule.limit))
    return
  end
  if length == 0 then
    return
  end
  local body = handle:body()
  if body == nil then
    return
  end
  local size = body:length()
  if size > rule.limit then
    refuse(handle, "413", string.format(
      "the request body is over %d bytes; %s %s accepts at most %d", rule.limit, method, path,
      rule.limit))
    return
  end
  if rule.json and size > 0 then
    local text = body:getBytes(0, size)
    if json_depth(text, LIMITS.depth) > LIMITS.depth then
      refuse(handle, "400", string.format(
        "JSON body nested deeper than %d levels; flatten the document", LIMITS.depth))
      return
    end
  end
end

-- The transcoder's messages for a body that does not fit the request message name protobuf
-- internals ("for type TYPE_INT32", "type.googleapis.com/...", "Proto field ..."): say it plainly.
local EXPECTED = {
  STRING = "a string", BYTES = "a base64 string", BOOL = "true or false", ENUM = "a listed value",
  INT32 = "a 32-bit integer", SINT32 = "a 32-bit integer", UINT32 = "a non-negative integer",
  INT64 = "an integer", SINT64 = "an integer", UINT64 = "a non-negative integer",
  DOUBLE = "a number", FLOAT = "a number",
}
local WELL_KNOWN = {
  ["google.protobuf.Struct"] = "a JSON object", ["google.protobuf.ListValue"] = "a JSON array",
  ["google.protobuf.Timestamp"] = "an RFC 3339 timestamp", ["google.protobuf.Duration"] =
  "a duration such as \"30s\"",
}
local JSON_ERRORS = {"^Unexpected", "^Encountered", "^Missing", "^Expected", "^Invalid", "^Unable"}

local function plain_message(message)
  message = string.gsub(message, "for type TYPE_([%u%d]+)", function(kind)
    return "(expected " .. (EXPECTED[kind] or "another type") .. ")"
  end)
  message = string.gsub(message, "for type type%.googleapis%.com/([%w%._]+)", function(name)
    return "(expected " .. (WELL_KNOWN[name] or "a JSON object") .. ")"
  end)
  message = string.gsub(message, "^: Proto field is not repeating, cannot start list%.",
    "a field that takes one value got a JSON array")
  message = string.gsub(message, "^: Proto fields must have a name%.", "an empty key is not allowed")
  for _, pattern in ipairs(JSON_ERRORS) do
    if string.find(message, pattern) then
      return "the body is not valid JSON: " .. message
    end
  end
  return message
end

local LOCAL_400 = '^{"code":3,"details":%[%],"message":"(.*)"}%s*$'

-- Applies the `x-http-status` value a service sent as gRPC metadata (201, 202, 422, ...) to
-- transcoded REST responses, and strips the gRPC headers a REST client has no use for.
function envoy_on_response(handle)
  local headers = handle:headers()
  if is_grpc(headers:get("content-type") or "") then
    return
  end
  local wanted = headers:get("x-http-status")
  if wanted ~= nil then
    if string.match(wanted, "^[1-5]%d%d$") then
      headers:replace(":status", wanted)
    end
    headers:remove("x-http-status")
  elseif headers:get(":status") == "429" then
    -- gRPC's own size limits also say RESOURCE_EXHAUSTED; 429 is for rate limits only.
    local message = headers:get("grpc-message") or ""
    if string.find(message, "larger than max", 1, true) then
      headers:replace(":status", "413")
    elseif string.find(message, "metadata size", 1, true) then
      headers:replace(":status", "431")
    end
  end
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")
  headers:remove("grpc-status-details-bin")
  if headers:get(":status") == "400" and headers:get("content-type") == "application/json" then
    local body = handle:body()
    if body == nil or body:length() > 4096 then
      return
    end
    local text = body:getBytes(0, body:length())
    local message = string.match(text, LOCAL_400)
    if message ~= nil then
      local clear = plain_message(message)
      if clear ~= message then
        local out = '{"code":3,"details":[],"message":"' .. clear .. '"}'
        body:setBytes(out) -- Envoy updates content-length
      end
    end
  end
end
