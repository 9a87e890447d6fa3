-- The default run of a policy that brings no `run = function(ctx) … end`:
-- back up the selected resources with the backup runbook, apply the policy's
-- retention (forget, then prune) on a retention worker, and copy the points
-- selected for archive to the archive repository.
--
-- Called as `require("skiff.policy_run")(policy, ctx)`, in the policy's own
-- VM, with the run's worker pool; returns `{points = n, bytes = n}`.
--
-- The data mover and repository primitives this needs are not in this build
-- yet, so a default run fails loudly instead of pretending to back anything up.

return function(policy, ctx)
  error(string.format(
    "policy %q: default runs need the data mover (backup runbook, then retention and archive), which this build of skiff does not include yet; give the policy its own run = function(ctx) … end",
    policy.name), 0)
end
