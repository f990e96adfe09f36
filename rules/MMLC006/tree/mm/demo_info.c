// SPDX-License-Identifier: GPL-2.0
#include <linux/mutex.h>
#include <linux/slab.h>

struct demo_info {
	int nr;
	unsigned long map[];
};

struct demo_owner {
	struct demo_info __rcu *info;
};

static DEFINE_MUTEX(demo_info_mutex);

int demo_info_fill(struct demo_info *info);

static void demo_free_info(struct demo_owner *o)
{
	struct demo_info *info = rcu_dereference_protected(o->info, true);

	kvfree(info);
	RCU_INIT_POINTER(o->info, NULL);
}

int demo_alloc_info(struct demo_owner *o, int size)
{
	struct demo_info *info;

	mutex_lock(&demo_info_mutex);
	info = kvzalloc(sizeof(*info) + size, GFP_KERNEL);
	if (!info)
		goto err;
	rcu_assign_pointer(o->info, info);
	if (demo_info_fill(info))
		goto err_free;
	mutex_unlock(&demo_info_mutex);
	return 0;

err_free:
	demo_free_info(o);
err:
	mutex_unlock(&demo_info_mutex);
	return -ENOMEM;
}
