-- Argo CD health of a guestha InGuestCluster (docs/argocd.md). Base and table libraries
-- only (what argocd-cm scripts get), so no string functions.
-- Order: a status older than the spec is Progressing; then Degraded: a member whose VM
-- does not run (Stopped, Missing, Failed, ...), a member whose agent was connected and is
-- lost, a failed agent upgrade, no quorum; then Progressing: members starting, agents not
-- yet heard from, members leaving, an agent upgrade under way; Suspended: the agent
-- upgrade is paused (spec.agent.upgrade Manual) with agents left to upgrade; Healthy when
-- a majority runs (condition Available).
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

local function join(names)
  return table.concat(names, ", ")
end

local starting_phases = {Pending = true, Scheduling = true, Scheduled = true}

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the guestha operator to report the cluster"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the guestha operator to act on generation " .. generation ..
    " (the status is of generation " .. status.observedGeneration .. ")"
  return hs
end

local down, lost, starting, unheard = {}, {}, {}, {}
for _, m in ipairs(status.members or {}) do
  local phase = m.phase or "Unknown"
  local name = m.name or "?"
  if phase == "Running" then
    if m.agent == "Disconnected" then
      table.insert(lost, name)
    elseif m.agent ~= "Connected" then
      table.insert(unheard, name)
    end
  elseif starting_phases[phase] then
    table.insert(starting, name .. " (" .. phase .. ")")
  else
    table.insert(down, name .. " (" .. phase .. ")")
  end
end
local upgrade = condition(status, "AgentsUpToDate")

if #down > 0 then
  hs.status = "Degraded"
  hs.message = "Members not running: " .. join(down)
  return hs
end
if #lost > 0 then
  hs.status = "Degraded"
  hs.message = "Agents not answering: " .. join(lost)
  return hs
end
if upgrade ~= nil and upgrade.status == "False" and upgrade.reason == "UpgradeFailed" then
  hs.status = "Degraded"
  hs.message = "Agent upgrade failed: " .. (upgrade.message or "")
  return hs
end
if status.quorum == false and #starting == 0 and #unheard == 0 then
  hs.status = "Degraded"
  hs.message = "No quorum: fewer than a majority of members and the operator are in contact"
  return hs
end
if #starting > 0 then
  hs.status = "Progressing"
  hs.message = "Members starting: " .. join(starting)
  return hs
end
if #unheard > 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the agents of: " .. join(unheard)
  return hs
end
if status.departing ~= nil and #status.departing > 0 then
  local names = {}
  for _, d in ipairs(status.departing) do
    table.insert(names, d.name or "?")
  end
  hs.status = "Progressing"
  hs.message = "Members leaving the cluster: " .. join(names)
  return hs
end
if upgrade ~= nil and upgrade.status == "False" then
  if upgrade.reason == "Paused" then
    hs.status = "Suspended"
  else
    hs.status = "Progressing"
  end
  hs.message = "Agents: " .. (upgrade.message or upgrade.reason or "not up to date")
  return hs
end
local available = condition(status, "Available")
if available ~= nil and available.status == "True" then
  hs.status = "Healthy"
  hs.message = available.message or "available"
  return hs
end
hs.status = "Degraded"
if available ~= nil and available.message ~= nil then
  hs.message = available.message
else
  hs.message = "Not available"
end
return hs
