"""Start the Language-Table world (langtable_sim) beside the cobra node, which watches its camera.

    ros2 launch cobra_ros sim.launch.py block_mode:=BLOCK_8 record_path:=/tmp/sim_bag

The world's `image` and the cobra node's input `image` are both remapped to `camera_topic`. The
cobra node runs on the simulated time the world publishes on /clock (use_sim_time), so its
outputs and diagnostics carry the same clock as the frames. When either node exits with a
non-zero status, the launch ends and `ros2 launch` exits non-zero.
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


def _nodes(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    namespace = arg('namespace') or None
    camera = arg('camera_topic')
    sim = Node(
        package=PACKAGE,
        executable='langtable_sim',
        name='langtable_sim',
        namespace=namespace,
        parameters=[{
            'block_mode': arg('block_mode'),
            'seed': int(arg('seed')),
            'rate_hz': float(arg('rate_hz')),
            'record_path': arg('record_path'),
        }],
        remappings=[('image', camera), ('image/compressed', camera + '/compressed')],
        output='screen',
        emulate_tty=True,
    )
    overrides = {'use_sim_time': _flag(arg('use_sim_time'))}
    overrides.update({
        name: ParameterValue(arg(name), value_type=str)
        for name in ('model_path', 'device')
        if arg(name)
    })
    cobra = Node(
        package=PACKAGE,
        executable='cobra_node',
        name='cobra',
        namespace=namespace,
        parameters=[arg('params_file'), overrides],
        remappings=[('image', camera)],
        output='screen',
        emulate_tty=True,
    )
    return [sim, cobra] + [
        RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_fail_on_error))
        for node in (sim, cobra)
    ]


def _flag(text):
    # the arguments arrive as text; ParameterValue(text, value_type=bool) refuses a str
    if text.lower() not in ('true', 'false'):
        raise ValueError(f'use_sim_time must be true or false, not {text!r}')
    return text.lower() == 'true'


def _fail_on_error(event, context):
    # as in describe.launch.py: launch exits non-zero only when an action raises. Launch files
    # run on the ROS install's Python, which need not import cobra_ros, so each has its own.
    if event.returncode != 0:
        raise RuntimeError(f'{event.process_name} exited with status {event.returncode}')


def generate_launch_description():
    config = os.path.join(get_package_share_directory(PACKAGE), 'config', 'cobra.yaml')
    return LaunchDescription([
        DeclareLaunchArgument(
            'block_mode', default_value='BLOCK_4',
            description='block set of the first episode: BLOCK_4, BLOCK_8 or N_CHOOSE_K'),
        DeclareLaunchArgument(
            'seed', default_value='0', description='world seed'),
        DeclareLaunchArgument(
            'rate_hz', default_value='10.0',
            description='world steps per wall-clock second; 0 = as fast as it can'),
        DeclareLaunchArgument(
            'record_path', default_value='',
            description='record the world to a new MCAP bag here; empty = no recording'),
        DeclareLaunchArgument(
            'camera_topic', default_value='sim/image',
            description="the world's camera topic, which the cobra node watches"),
        DeclareLaunchArgument(
            'use_sim_time', default_value='true',
            description='run the cobra node on the simulated time of /clock'),
        DeclareLaunchArgument(
            'model_path', default_value='',
            description='Cobra model directory; empty = model_path of the YAML'),
        DeclareLaunchArgument(
            'device', default_value='',
            description='torch device of the cobra node; empty = device of the YAML'),
        DeclareLaunchArgument(
            'namespace', default_value='', description='namespace of both nodes'),
        DeclareLaunchArgument(
            'params_file', default_value=config,
            description='parameter YAML for the cobra node'),
        OpaqueFunction(function=_nodes),
    ])
