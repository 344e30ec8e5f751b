# The two commands (see README):
#   make lab    bring up the lab fleet and converge it with playbooks/site.yml
#   make test   lint, sanity, the Workers' tests in workerd, unit and
#               integration tests, every Molecule scenario, and the lab end to end
# Both run `setup` first; every step is safe to repeat.

SHELL := /bin/bash
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
SCENARIOS := $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))

.PHONY: lab lab-up lab-down lab-edge setup test lint sanity workers-test unit molecule lab-test build clean

lab: setup lab-up
	ansible-playbook playbooks/site.yml

lab-up: setup
	ansible-playbook -i inventory/lab/hosts.yml playbooks/lab.yml
	scripts/cloudflare-emulator.sh start

lab-down: setup
	ansible-playbook -i inventory/lab/hosts.yml playbooks/lab.yml -e lab_state=absent
	scripts/cloudflare-emulator.sh stop

# The lab's edge, served locally in workerd from what the emulator holds:
#   curl -H "Authorization: Bearer $$(cat .cache/blackroad-lab/edge/api-key)" \
#        --resolve api.blackroad.io:8788:127.0.0.1 http://api.blackroad.io:8788/hello
lab-edge: setup
	node workers/lab/edge-lab.mjs --listen 127.0.0.1:8788 --connector-prefix blackroad-lab- \
		--token-file .cache/lab/cloudflare/token --base-url http://127.0.0.1:8787/client/v4

setup:
	@scripts/setup.sh

test: setup lint sanity workers-test unit molecule lab-test
	@echo "all checks passed"

lint:
	yamllint -s .
	ansible-lint --profile production
	antsibull-changelog lint

sanity:
	scripts/sanity.sh

# The five Workers, each in workerd (Miniflare), with real KV bindings.
workers-test:
	cd workers && npm test

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
