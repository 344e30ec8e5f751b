# The two commands (see README):
#   make lab    bring up the lab fleet and converge it with playbooks/site.yml
#   make test   lint, sanity, unit and integration tests, every Molecule
#               scenario, and the lab end to end
# Both run `setup` first; every step is safe to repeat.

SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
SCENARIOS := $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))

.PHONY: lab lab-up lab-down setup test lint sanity unit molecule lab-test build clean

lab: setup lab-up
	ansible-playbook playbooks/site.yml

lab-up: setup
	ansible-playbook -i inventory/lab/hosts.yml playbooks/lab.yml
	scripts/cloudflare-emulator.sh start

lab-down: setup
	ansible-playbook -i inventory/lab/hosts.yml playbooks/lab.yml -e lab_state=absent
	scripts/cloudflare-emulator.sh stop

setup:
	@scripts/setup.sh

test: setup lint sanity unit molecule lab-test
	@echo "all checks passed"

lint:
	yamllint -s .
	ansible-lint --profile production
	antsibull-changelog lint

sanity:
	scripts/sanity.sh

# Unit tests and the integration tests that need no containers
# (argument validation, the built tarball); pytest.ini lists both.
unit:
	pytest

# site.yml on a lab of its own: converges, then a second run and --check
# report changed=0 for every host.
lab-test:
	pytest tests/lab

molecule:
	@set -e; for s in $(SCENARIOS); do molecule test -s $$s; done

build:
	ansible-galaxy collection build --force --output-path .cache/dist

clean: lab-down
	rm -rf .cache/sanity .cache/dist
