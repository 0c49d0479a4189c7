# Nomad runs a cove VM with the raw_exec driver: `cove run --foreground` is
# the task's process, so Nomad owns the VM's life (placement, restarts, a
# graceful guest shutdown on `nomad job stop`, the console in `nomad alloc logs`).
#
#   nomad job run examples/schedulers/cove-vm.nomad.hcl
#
# Each client needs cove, QEMU and the spec at /etc/cove/pg.toml (e.g. a
# copy of examples/postgres.toml), and raw_exec enabled in its plugin config.
# Where /dev/kvm is missing QEMU runs under TCG, slower but the same.

job "cove-pg" {
  type = "service"

  group "vm" {
    count = 1

    # The VM's host port, forwarded by QEMU (the spec's `ports`).
    network {
      port "postgres" {
        static = 15432
      }
    }

    restart {
      attempts = 3
      interval = "10m"
      delay    = "15s"
      mode     = "fail"
    }

    task "pg" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/cove"
        # A first start builds the image and creates the VM from the spec.
        args = ["run", "--foreground", "--stop-timeout", "30", "/etc/cove/pg.toml"]
      }

      # SIGTERM to cove: it shuts the guest down through its agent. Give it
      # the stop timeout plus a margin before Nomad kills the task's processes.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      # cove's state and images in one place on the client, shared by its
      # VMs; sockets in the allocation's own directory.
      env {
        XDG_STATE_HOME  = "/var/lib"
        XDG_DATA_HOME   = "/var/lib/cove/share"
        XDG_CACHE_HOME  = "/var/cache"
        XDG_RUNTIME_DIR = "${NOMAD_TASK_DIR}/run"
        HOME            = "/var/lib/cove"
      }

      # Exit statuses (cove run --help): 0 shut down, 1 could not start,
      # 3 never ready, 4 crashed, 5 killed after the stop timeout.

      resources {
        cpu    = 2000 # MHz: TCG boots are CPU-bound
        memory = 1200 # MiB: the guest's 1G plus QEMU and cove
      }

      service {
        name     = "cove-pg"
        port     = "postgres"
        provider = "nomad"

        check {
          type     = "tcp"
          interval = "10s"
          timeout  = "2s"
        }
      }
    }
  }
}
