-- Argo CD health of a kubevisor MigrationJob: Healthy once Succeeded (or cancelled as
-- spec.cancel asks), Degraded when it failed or was cancelled by kubevisor.
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
local phase = obj.status.phase or "Pending"
local route = (obj.status.source or "?") .. " -> " .. (obj.status.target or "?")
if phase == "Succeeded" then
  return { status = "Healthy", message = "Migrated " .. route }
end
if phase == "Cancelled" then
  local why = obj.status.reason or "Cancelled"
  if obj.spec ~= nil and obj.spec.cancel == true then
    return { status = "Healthy", message = "Cancelled as spec.cancel asks: " .. why }
  end
  return { status = "Degraded", message = "Cancelled: " .. why }
end
local stalled = condition("Stalled")
if phase == "Failed" or (stalled ~= nil and stalled.status == "True") then
  local why = obj.status.reason or (stalled and stalled.message) or "Failed"
  return { status = "Degraded", message = "Failed: " .. why }
end
hs.message = phase .. " " .. route
local progress = obj.status.progress
if phase == "Running" and progress ~= nil and progress.percent ~= nil then
  hs.message = hs.message .. " (" .. tostring(progress.percent) .. "%)"
end
return hs
