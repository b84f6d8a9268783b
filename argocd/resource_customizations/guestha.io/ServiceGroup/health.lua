-- Argo CD health of a guestha ServiceGroup (docs/argocd.md). Written for the libraries a
-- script installed through argocd-cm gets: base and table only, so no string functions.
-- Order: a status older than the spec is Progressing; a fault is Degraded even when the
-- group is frozen (a freeze reports faults, it does not repair them); then frozen is
-- Suspended; moving (Starting, Stopping, Switching) is Progressing; Ready is Healthy.
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil then
    return c.reason
  end
  return fallback
end

-- Reasons (guestha.engine.reasons) for which a group not yet Ready is on its way there.
local waiting = {
  AutoStart = true, OnlineRequested = true, Failover = true, OnlineRetry = true,
  Switchover = true, CompleteOnline = true, InProgress = true, AutoStartWait = true,
  NotConfirmedOffline = true, AgentSilent = true, MigrationPause = true,
  FenceNotConfirmed = true, StopNotConfirmed = true, AwaitingSelfFence = true,
  NoDecision = true,
}

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the guestha operator to report the group"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the guestha operator to act on generation " .. generation ..
    " (the status is of generation " .. status.observedGeneration .. ")"
  return hs
end

local state = status.state or "Unknown"
local ready = condition(status, "Ready")
local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = state .. ": " .. text(degraded, "degraded")
  return hs
end
if ready ~= nil and ready.status == "False" and
    (ready.reason == "ClusterNotFound" or ready.reason == "ClusterDeleted") then
  hs.status = "Degraded"
  hs.message = text(ready, ready.reason)
  return hs
end

local frozen = condition(status, "Frozen")
if (frozen ~= nil and frozen.status == "True") or
    (frozen == nil and obj.spec ~= nil and obj.spec.frozen == true) then
  hs.status = "Suspended"
  hs.message = "Frozen (spec.frozen): " .. state .. ", " .. text(ready, "not started or moved")
  return hs
end

local progressing = condition(status, "Progressing")
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = state .. ": " .. text(progressing, "in progress")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = state .. ": " .. text(ready, state)
  return hs
end
if ready == nil or waiting[ready.reason] then
  hs.status = "Progressing"
  hs.message = state .. ": " .. text(ready, status.message or "waiting for the guestha operator")
  return hs
end
hs.status = "Degraded"
hs.message = state .. ": " .. text(ready, "not ready")
return hs
