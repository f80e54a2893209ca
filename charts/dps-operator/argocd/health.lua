-- Argo CD health check for every kind of dps.iot-operator.dev: ProvisioningService, IndividualEnrollment,
-- EnrollmentGroup and DeviceDeprovision. Argo CD runs it with the live object as the global `obj` and shows
-- the table it returns ({status = ..., message = ...}).
--
-- It reads the kstatus conditions the operator writes (Ready, Reconciling, Stalled, each with
-- observedGeneration; docs/gitops.md has the mapping). Written for Lua 5.1, the dialect of Argo CD's
-- interpreter (gopher-lua); tests/integration/gitops_health.rs runs it with lua5.1 and lua5.4 on objects
-- taken from the operator's real runs. This file is the source: docs/gitops/argocd-cm.yaml and
-- charts/dps-operator/argocd/ carry copies that a test keeps identical.

local hs = {}

local function condition(type_)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

-- A condition written for an older generation says nothing about the current spec.
local function current_true(type_)
  local c = condition(type_)
  if c == nil or c.status ~= "True" then
    return nil
  end
  local generation = obj.metadata.generation
  if c.observedGeneration ~= nil and generation ~= nil and c.observedGeneration < generation then
    return nil
  end
  return c
end

-- "Reason: message"; the operator writes "-" as the message of a condition that has nothing to say.
local function describe(c)
  local text = c.reason or c.type
  if c.message ~= nil and c.message ~= "" and c.message ~= "-" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
local generation = obj.metadata.generation

-- Deleting: the finalizer runs the revocation order (docs/controllers.md). Only a stall needs a person.
if obj.metadata.deletionTimestamp ~= nil then
  local stalled = current_true("Stalled")
  if stalled ~= nil then
    hs.status = "Degraded"
    hs.message = "deletion stalled, " .. describe(stalled)
    return hs
  end
  hs.status = "Progressing"
  hs.message = "deleting"
  local reconciling = current_true("Reconciling")
  if reconciling ~= nil then
    hs.message = "deleting, " .. describe(reconciling)
  end
  return hs
end

if status == nil or status.conditions == nil or #status.conditions == 0 then
  -- A DeviceDeprovision status written without conditions still has its phase.
  if obj.kind == "DeviceDeprovision" and status ~= nil and status.phase == "Completed" then
    hs.status = "Healthy"
    hs.message = status.message or "Completed"
    return hs
  end
  hs.status = "Progressing"
  hs.message = "waiting for the operator to report a status"
  return hs
end

-- As kstatus does, a status without observedGeneration is judged by its conditions' own observedGeneration.
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = current_true("Stalled")
if stalled ~= nil then
  -- A DeviceDeprovision keeping this entry disabled is the wanted state, not a fault.
  if obj.kind == "IndividualEnrollment" and stalled.reason == "Blocked" then
    hs.status = "Suspended"
  else
    hs.status = "Degraded"
  end
  hs.message = describe(stalled)
  return hs
end

local ready = current_true("Ready")
if ready ~= nil then
  hs.status = "Healthy"
  hs.message = describe(ready)
  local risk = current_true("ReEnrollmentRisk")
  if risk ~= nil then
    hs.message = hs.message .. "; " .. describe(risk)
  end
  return hs
end

local reconciling = current_true("Reconciling")
if reconciling ~= nil then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
  return hs
end

if obj.kind == "DeviceDeprovision" and status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.message or "Failed"
  return hs
end

hs.status = "Progressing"
local ready_false = condition("Ready")
if ready_false ~= nil then
  hs.message = describe(ready_false)
else
  hs.message = "no Ready condition yet"
end
return hs
