"""SSM Run Command on top of moto 5.2.5: SendCommand refuses what AWS refuses.

moto's SendCommand accepts any instance id and reports every invocation as
Success. AWS answers InvalidInstanceId when a target "is not in the same
Region as the command", "has been stopped or terminated", or "isn't
configured for Systems Manager" (SendCommand, Errors, in the AWS Systems
Manager API Reference). This patch restores the first two rules: an instance
id that does not exist in the caller's account and region, or whose instance
is not running, makes SendCommand fail with InvalidInstanceId, so code that
tells the operator why a command could not be sent is tested. moto still
never runs a command; tests run the script themselves.
"""

from moto.ec2.models import ec2_backends
from moto.ssm.exceptions import SSMException
from moto.ssm.models import SimpleSystemManagerBackend


class InvalidInstanceId(SSMException):
    def __init__(self, instance_id: str) -> None:
        super().__init__(
            "InvalidInstanceId",
            f"Instance {instance_id} is not in a valid state for account "
            "and region, or is not managed by Systems Manager",
        )


def apply():
    send_command = SimpleSystemManagerBackend.send_command

    def send_command_to_running_instances(self, *args, **kwargs):
        instance_ids = kwargs.get("instance_ids")
        if instance_ids is None and len(args) > 3:
            instance_ids = args[3]
        ec2 = ec2_backends[self.account_id][self.region_name]
        running = {
            i.id for i in ec2.all_instances() if i.state == "running"
        }
        for instance_id in instance_ids or []:
            if instance_id not in running:
                raise InvalidInstanceId(instance_id)
        return send_command(self, *args, **kwargs)

    SimpleSystemManagerBackend.send_command = send_command_to_running_instances
