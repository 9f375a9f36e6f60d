// Eclipse Mosquitto's client library (Debian: libmosquitto-dev), for MQTT forwarding (MQTTForwarder.swift).
#include <mosquitto.h>
