"""Start the cobra node with config/cobra.yaml (or the YAML given as params_file).

    ros2 launch cobra_ros describe.launch.py model_path:=/models/cobra device:=cuda \
        image_topic:=/camera/color/image_raw namespace:=robot1 params_file:=/robot/cobra.yaml

model_path and device override the YAML only when given (empty = keep the YAML value); `ros2
launch cobra_ros describe.launch.py --show-args` lists the arguments. When the node exits with a
non-zero status (a model that does not load, a bad device or parameter), the launch ends and
`ros2 launch` exits non-zero too.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = 'cobra_ros'


def _cobra_node(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {
        name: ParameterValue(arg(name), value_type=str)
        for name in ('model_path', 'device')
        if arg(name)
    }
    cobra = Node(
        package=PACKAGE,
        executable='cobra_node',
        name='cobra',
        namespace=arg('namespace') or None,
        parameters=[arg('params_file')] + ([overrides] if overrides else []),
        remappings=[('image', arg('image_topic'))],
        output='screen',
        emulate_tty=True,
    )
    return [
        cobra,
        RegisterEventHandler(OnProcessExit(target_action=cobra, on_exit=_fail_on_error)),
    ]


def _fail_on_error(event, context):
    # launch's exit status is non-zero only when an action raises (a Shutdown action does not
    # change it), so a node that failed makes the launch fail by raising here.
    if event.returncode != 0:
        raise RuntimeError(f'{event.process_name} exited with status {event.returncode}')


def generate_launch_description():
    config = os.path.join(get_package_share_directory(PACKAGE), 'config', 'cobra.yaml')
    return LaunchDescription([
        DeclareLaunchArgument(
            'model_path', default_value='',
            description='Cobra model directory (release layout); empty = model_path of the YAML'),
        DeclareLaunchArgument(
            'device', default_value='',
            description='torch device, e.g. cpu or cuda; empty = device of the YAML'),
        DeclareLaunchArgument(
            'image_topic', default_value='image',
            description='camera topic that the node input "image" is remapped to'),
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='namespace of the cobra node'),
        DeclareLaunchArgument(
            'params_file', default_value=config,
            description='parameter YAML for the node'),
        OpaqueFunction(function=_cobra_node),
    ])
