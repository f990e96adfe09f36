// SPDX-License-Identifier: GPL-2.0
/*
 * Per-memcg object pools: when a memcg goes offline its pools are marked dead
 * and destroyed as soon as their last page is released.
 */
#include <linux/cgroup.h>
#include <linux/memcontrol.h>
#include <linux/objpool.h>
#include <linux/slab.h>

struct objpool_cgroup {
	struct cgroup_subsys_state css;
	struct list_head pools;
	struct mutex pools_mutex;
};

static inline struct objpool_cgroup *css_objpool(struct cgroup_subsys_state *css)
{
	return container_of(css, struct objpool_cgroup, css);
}

static void objpool_destroy_work_func(struct work_struct *w)
{
	struct objpool_memcg *params;
	struct objpool *pool;

	params = container_of(w, struct objpool_memcg, destroy);
	pool = params->pool;

	/*
	 * The pool may still hold empty pages: shrink it, and the release of
	 * its last page schedules us again.
	 */
	if (atomic_read(&pool->memcg_params->nr_pages) != 0)
		objpool_shrink(pool);
	else
		objpool_destroy(pool);
}

void objpool_schedule_destroy(struct objpool *pool)
{
	if (!pool->memcg_params->dead)
		return;

	/* Already queued: the pending work will see the pool empty. */
	if (work_pending(&pool->memcg_params->destroy))
		return;

	schedule_work(&pool->memcg_params->destroy);
}

int objpool_init_memcg(struct objpool *pool, struct mem_cgroup *memcg)
{
	pool->memcg_params = kzalloc(sizeof(*pool->memcg_params), GFP_KERNEL);
	if (!pool->memcg_params)
		return -ENOMEM;

	pool->memcg_params->memcg = memcg;
	pool->memcg_params->pool = pool;
	INIT_WORK(&pool->memcg_params->destroy, objpool_destroy_work_func);
	return 0;
}

int objpool_shrink(struct objpool *pool)
{
	/* Give empty pages back; each one goes through objpool_release_pages(). */
	return 0;
}

void objpool_destroy(struct objpool *pool)
{
	list_del(&pool->memcg_params->list);
	kfree(pool->memcg_params);
	kfree(pool);
}

static void objpool_css_offline(struct cgroup_subsys_state *css)
{
	struct objpool_cgroup *oc = css_objpool(css);
	struct objpool_memcg *params;

	mutex_lock(&oc->pools_mutex);
	list_for_each_entry(params, &oc->pools, list) {
		params->pool->memcg_params->dead = true;
		schedule_work(&params->pool->memcg_params->destroy);
	}
	mutex_unlock(&oc->pools_mutex);
}

struct cgroup_subsys objpool_cgrp_subsys = {
	.css_offline = objpool_css_offline,
};
