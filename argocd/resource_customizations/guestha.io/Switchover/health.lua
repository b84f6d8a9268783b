-- Argo CD health of a guestha Switchover (docs/argocd.md): an action with a phase, like a
-- Job. Succeeded is Healthy, Failed is Degraded, Pending and Running are Progressing;
-- a finished phase is final (the CRD forbids changing it), so only an unfinished status
-- older than the spec counts as Progressing. Base and table libraries only.
local hs = {}
local status = obj.status

local function detail(s, fallback)
  local out = fallback
  if s.message ~= nil and s.message ~= "" then
    out = s.message
  end
  if s.reason ~= nil and s.reason ~= "" then
    out = s.reason .. ": " .. out
  end
  return out
end

if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the guestha operator to start the switchover"
  return hs
end
if status.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = detail(status, "switched")
  return hs
end
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = detail(status, "failed")
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and
    status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the guestha operator to act on generation " .. generation ..
    " (the status is of generation " .. status.observedGeneration .. ")"
  return hs
end
hs.status = "Progressing"
hs.message = status.phase .. ": " .. detail(status, "in progress")
return hs
