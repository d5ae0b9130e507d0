#!/usr/bin/env bash
# Build the cobra_ros msg/srv/action with CMake against the ROS 2 PyPI wheels and install them into
# the venv prefix (usage: tools/build_interfaces.sh [VENV], default .venv). Skipped when nothing that
# the build reads has changed since the last successful run.
set -euo pipefail
trap 'echo "build_interfaces.sh: failed at line $LINENO" >&2' ERR

cd "$(dirname "$0")/.."
venv=$(cd "${1:-.venv}" && pwd)
py="$venv/bin/python"
build="build/interfaces"
stamp="$build/.inputs.sha256"

# several `make test` may run at once in one checkout: one builds, the others wait and then find it done
exec 9>"$venv/.cobra-interfaces.lock"
flock 9

inputs=$(ls msg/*.msg srv/*.srv action/*.action CMakeLists.txt package.xml setup.cfg \
  cobra_ros/__init__.py launch/* config/* | LC_ALL=C sort)
# the venv path is part of the key: a new venv at the same place must be built into again
digest=$( (echo "$venv"; sha256sum $inputs) | sha256sum | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]] \
  && "$py" -c "import cobra_ros.msg, cobra_ros.srv, cobra_ros.action" 2>/dev/null; then
  echo "interfaces up to date"
  exit 0
fi

# Workaround: the wheels' exported CMake files name the Python include dirs of the machine that
# built them; point them at this interpreter and this venv, or CMake rejects the imported targets.
read -r py_include site_packages < <("$py" -c \
  'import sysconfig as s; p = s.get_paths(); print(p["include"], p["purelib"])')
# (grep finds nothing once they are patched)
{ grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311/' "$venv/share" || true; } \
  | xargs -0 -r sed -i \
    -e "s|/opt/python/cp311-cp311/include/python3.11|$py_include|g" \
    -e "s|/opt/python/cp311-cp311/lib/python3.11/site-packages|$site_packages|g"

rm -rf "$build" "$venv/lib/cobra_ros"  # the wrappers of executables since removed go too
mkdir -p "$build"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
cmake -S . -B "$build" -Wno-dev \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$py" \
  -DBUILD_TESTING=OFF \
  -DCOBRA_INSTALL_PYTHON_SOURCES=OFF >"$build/cmake.log" 2>&1 \
  || { cat "$build/cmake.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >"$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 1; }
cmake --install "$build" >"$build/install.log" 2>&1 || { tail -50 "$build/install.log"; exit 1; }
# rosidl also installs an egg-info named cobra_ros; pip already records the editable cobra_ros,
# and two distributions of one name confuse pip and importlib.metadata.
rm -rf "$site_packages"/cobra_ros-*.egg-info

# The venv is the install prefix (share/ament_index, lib/cobra_ros): every Python started from it
# puts the prefix on AMENT_PREFIX_PATH, so `ros2 launch cobra_ros ...` and `ros2 run cobra_ros ...`
# find the package, and the nodes launch starts inherit it. (A ROS 2 install's own `ros2` needs
# AMENT_PREFIX_PATH="$venv:$AMENT_PREFIX_PATH" exported instead: docs/launch.md.)
echo 'import os, sys; p = [d for d in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)'\
' if d]; sys.prefix in p or os.environ.__setitem__("AMENT_PREFIX_PATH", os.pathsep.join('\
'[sys.prefix, *p]))' >"$site_packages/cobra_ros_ament_prefix.pth"

"$py" -c "import cobra_ros.msg, cobra_ros.srv, cobra_ros.action"
echo "$digest" >"$stamp"
echo "interfaces built and installed into $venv"
