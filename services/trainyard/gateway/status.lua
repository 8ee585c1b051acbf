-- Applies the `x-http-status` value a service sent as gRPC metadata (201, 202, 422, ...) to
-- transcoded REST responses, and strips the gRPC headers a REST client has no use for.
-- Sits before the transcoder, so on the response path it sees the transcoded (JSON) headers.
function envoy_on_response(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if string.sub(content_type, 1, 16) == "application/grpc" then
    return
  end
  local wanted = headers:get("x-http-status")
  if wanted ~= nil then
    if string.match(wanted, "^[1-5]%d%d$") then
      headers:replace(":status", wanted)
    end
    headers:remove("x-http-status")
  end
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-accept-encoding")
  headers:remove("grpc-status-details-bin")
end
