-- Argo CD health of a kubevisor VirtualMachine, from the status its controller and agent
-- write (kstatus conditions, phase). A VM stopped or paused as its spec asks is Ready.
local hs = { status = "Progressing", message = "Waiting for the controller" }
local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then return c end
  end
  return nil
end
if obj.status == nil then return hs end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "Spec change not yet observed"
  return hs
end
local phase = obj.status.phase or ""
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  return { status = "Degraded", message = stalled.message or phase }
end
if phase == "Failed" then
  local ready = condition("Ready")
  return { status = "Degraded", message = (ready and ready.message) or "Failed" }
end
if phase == "Unschedulable" then
  local scheduled = condition("Scheduled")
  return { status = "Degraded", message = (scheduled and scheduled.message) or "No host fits" }
end
if phase == "Unknown" then
  local ready = condition("Ready")
  return { status = "Unknown", message = (ready and ready.message) or "Host unreachable" }
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  local paused = condition("Paused")
  if paused ~= nil and paused.status == "True" then
    return { status = "Suspended", message = ready.message or "Paused" }
  end
  return { status = "Healthy", message = phase .. ": " .. (ready.message or "") }
end
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" and reconciling.message ~= nil then
  hs.message = phase .. ": " .. reconciling.message
elseif ready ~= nil and ready.message ~= nil then
  hs.message = phase .. ": " .. ready.message
elseif phase ~= "" then
  hs.message = phase
end
return hs
