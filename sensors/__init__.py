"""Sensors: react to files appearing in the lake and to the runs they launch."""

from sensors.drift import drift_sensor
from sensors.landing import landing_sensor
from sensors.monitoring import monitoring_after_ingest_sensor
from sensors.regime import regime_sensor
from sensors.runs import run_sensors

all_sensors = [landing_sensor, drift_sensor, regime_sensor, monitoring_after_ingest_sensor, *run_sensors]
