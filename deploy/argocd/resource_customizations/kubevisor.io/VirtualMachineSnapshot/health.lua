-- Argo CD health of a kubevisor VirtualMachineSnapshot: Healthy once Ready (its images
-- exist), Degraded when it Failed, Progressing while Pending or InProgress.
if obj.status == nil or obj.status.phase == nil then
  return { status = "Progressing", message = "Waiting for the VM's host" }
end
local phase = obj.status.phase
if phase == "Ready" then
  local what = obj.status.consistency or "copy"
  return { status = "Healthy", message = "Ready (" .. what .. ") on " .. (obj.status.host or "?") }
end
if phase == "Failed" then
  local why = obj.status.reason or "Failed"
  if obj.status.message ~= nil then why = why .. ": " .. obj.status.message end
  return { status = "Degraded", message = "Failed: " .. why }
end
return { status = "Progressing", message = phase }
