"""Start the Language-Table world (langtable_sim) beside the cobra node, which watches its camera.

    ros2 launch cobra_ros sim.launch.py block_mode:=BLOCK_8 record_path:=/tmp/sim_bag

The world's `image` and the cobra node's input `image` are both remapped to `camera_topic`. The
cobra node runs on the simulated time the world publishes on /clock (use_sim_time), so its
outputs and diagnostics carry the same clock as the frames.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
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
            'seed': ParameterValue(arg('seed'), value_type=int),
            'rate_hz': ParameterValue(arg('rate_hz'), value_type=float),
            'record_path': arg('record_path'),
        }],
        remappings=[('image', camera), ('image/compressed', camera + '/compressed')],
        output='screen',
        emulate_tty=True,
    )
    overrides = {'use_sim_time': ParameterValue(arg('use_sim_time'), value_type=bool)}
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
    return [sim, cobra]


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
