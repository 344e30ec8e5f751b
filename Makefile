# The two commands (see README):
#   make lab    bring up the lab fleet and converge it with playbooks/site.yml
#   make test   lint, sanity, unit tests and every Molecule scenario
# Both run `setup` first; every step is safe to repeat.

SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
SCENARIOS := $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))

.PHONY: lab lab-up lab-down setup test lint sanity unit molecule build changelog clean

lab: setup lab-up
	ansible-playbook playbooks/site.yml

lab-up: setup
	ansible-playbook playbooks/lab.yml

lab-down: setup
	ansible-playbook playbooks/lab.yml -e lab_state=absent

setup:
	@scripts/setup.sh

test: setup lint sanity unit molecule
	@echo "all checks passed"

lint:
	yamllint -s .
	ansible-lint --profile production

sanity:
	scripts/sanity.sh

unit:
	pytest tests/unit

molecule:
	@set -e; for s in $(SCENARIOS); do molecule test -s $$s; done

build:
	ansible-galaxy collection build --force --output-path .cache/dist

changelog:
	antsibull-changelog lint

clean: lab-down
	rm -rf .cache/sanity .cache/dist
