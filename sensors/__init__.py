"""Sensors: react to files appearing in the lake."""

from sensors.landing import landing_sensor

all_sensors = [landing_sensor]
