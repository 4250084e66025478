-- Argo CD health of a kubevisor HypervisorHost: Ready comes from the agent's heartbeat as
-- the controller judges it; a cordoned or draining host is Suspended on purpose.
local hs = { status = "Progressing", message = "Waiting for the host's agent to register it" }
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
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  return { status = "Degraded", message = stalled.message or "Stalled" }
end
local ready = condition("Ready")
if ready == nil then
  hs.message = "Waiting for the first heartbeat"
  return hs
end
if ready.status ~= "True" then
  return { status = "Degraded", message = ready.message or "Not ready" }
end
local spec = obj.spec or {}
if spec.maintenance == true then
  return { status = "Suspended", message = "In maintenance: draining, no new VMs" }
end
if spec.unschedulable == true then
  return { status = "Suspended", message = "Cordoned: no new VMs" }
end
return { status = "Healthy", message = ready.message or "Ready" }
